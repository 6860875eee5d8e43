"""Pull stage timings (SERVER.md §7.5): which stages a pull reports, with what counts and flags."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import HistoryPrunedError, InvalidRequestError, ServiceUnavailableError
from oversync_sa.server import SyncService, stages
from oversync_sa.server.pull import pull, pull_encoded
from oversync_sa.server.stages import StageTiming
from tests.server.reading._support import Actor, make_service, note_inserts, set_floor, write

ALICE = Actor("alice")
ALL_STAGES = (
    "total",
    "transaction",
    "retained_floor_check",
    "resolve_stable_bundle_seq",
    "list_bundle_seqs",
    "load_bundles",
)
PullFn = Callable[..., Awaitable[Any]]
PULLS = pytest.mark.parametrize("pull_fn", [pull, pull_encoded], ids=["structs", "encoded"])

_batch = itertools.count()


async def _commit(service: SyncService, count: int) -> None:
    for _ in range(count):
        await write(service, "alice", note_inserts(f"t{next(_batch)}-", 2))


async def _recording_service(engine: AsyncEngine) -> tuple[SyncService, list[StageTiming]]:
    timings: list[StageTiming] = []
    return await make_service(engine, stage_metrics=timings.append), timings


def _by_stage(timings: list[StageTiming]) -> dict[str, StageTiming]:
    assert all(t.operation == "pull" for t in timings)
    counts = Counter(t.stage for t in timings)
    assert all(n == 1 for n in counts.values()), counts
    return {t.stage: t for t in timings}


@PULLS
async def test_every_stage_once_with_counts(pg_engine: AsyncEngine, pull_fn: PullFn) -> None:
    service, timings = await _recording_service(pg_engine)
    await _commit(service, 3)
    timings.clear()

    await pull_fn(service, ALICE, max_bundles=2)

    stages_seen = _by_stage(timings)
    assert tuple(sorted(stages_seen)) == tuple(sorted(ALL_STAGES))
    assert {s: t.count for s, t in stages_seen.items()} == {
        "total": 2,
        "transaction": 2,
        "retained_floor_check": 1,
        "resolve_stable_bundle_seq": 1,
        "list_bundle_seqs": 3,  # the page plus the look-ahead bundle that answers has_more
        "load_bundles": 2,
    }
    assert all(not t.error and t.attempt == 1 and t.duration >= 0.0 for t in timings)
    # Reported in completion order: the outer stages end last.
    assert [t.stage for t in timings][-2:] == ["load_bundles", "total"]


@PULLS
async def test_caught_up_pull_runs_no_page_query(pg_engine: AsyncEngine, pull_fn: PullFn) -> None:
    service, timings = await _recording_service(pg_engine)
    await _commit(service, 1)
    timings.clear()

    await pull_fn(service, ALICE, after_bundle_seq=1)

    stages_seen = _by_stage(timings)
    assert set(stages_seen) == {
        "total", "transaction", "retained_floor_check", "resolve_stable_bundle_seq"
    }
    assert stages_seen["total"].count == 0
    assert not any(t.error for t in timings)


@PULLS
async def test_pruned_history_flags_the_failing_stages(
    pg_engine: AsyncEngine, pull_fn: PullFn
) -> None:
    service, timings = await _recording_service(pg_engine)
    await _commit(service, 3)
    await set_floor(service.engine, "alice", 2)
    timings.clear()

    with pytest.raises(HistoryPrunedError):
        await pull_fn(service, ALICE, after_bundle_seq=1)

    stages_seen = _by_stage(timings)
    assert set(stages_seen) == {"total", "transaction", "retained_floor_check"}
    assert all(t.error for t in timings)


async def test_stable_ceiling_at_the_floor_flags_resolve(pg_engine: AsyncEngine) -> None:
    service, timings = await _recording_service(pg_engine)
    await _commit(service, 2)
    await set_floor(service.engine, "alice", 2)
    timings.clear()

    with pytest.raises(HistoryPrunedError):
        await pull(service, ALICE)

    flags = {t.stage: t.error for t in _by_stage(timings).values()}
    assert flags == {
        "total": True,
        "transaction": True,
        "retained_floor_check": False,
        "resolve_stable_bundle_seq": True,
    }


async def test_invalid_request_is_a_failed_total(pg_engine: AsyncEngine) -> None:
    service, timings = await _recording_service(pg_engine)
    with pytest.raises(InvalidRequestError):
        await pull(service, ALICE, after_bundle_seq=-1)
    assert [(t.stage, t.error) for t in timings] == [("total", True)]


async def test_shutdown_rejection_is_not_an_error(pg_engine: AsyncEngine) -> None:
    service, timings = await _recording_service(pg_engine)
    async with service.operation():  # keeps close() draining, i.e. shutting down
        closing = asyncio.create_task(service.close())
        await asyncio.sleep(0)
        with pytest.raises(ServiceUnavailableError):
            await pull(service, ALICE)
    await closing
    assert [(t.stage, t.error) for t in timings] == [("total", False)]


async def test_failing_recorder_never_fails_the_pull(pg_engine: AsyncEngine) -> None:
    calls: list[str] = []

    def broken(timing: StageTiming) -> None:
        calls.append(timing.stage)
        raise RuntimeError("metrics backend down")

    service = await make_service(pg_engine, stage_metrics=broken)
    await _commit(service, 1)
    response = await pull(service, ALICE)
    assert [b.bundle_seq for b in response.bundles] == [1]
    assert sorted(calls) == sorted(ALL_STAGES)


class _CountingClock:
    """Stands in for the ``time`` module inside :mod:`oversync_sa.server.stages`."""

    def __init__(self) -> None:
        self.calls = 0

    def perf_counter(self) -> float:
        self.calls += 1
        return float(self.calls)


@PULLS
async def test_unconfigured_service_takes_no_timings(
    pg_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, pull_fn: PullFn
) -> None:
    clock = _CountingClock()
    monkeypatch.setattr(stages, "time", clock)
    plain = await make_service(pg_engine)
    await _commit(plain, 2)

    await pull_fn(plain, ALICE)
    assert clock.calls == 0

    # The same pull on a configured service does read the clock (the probe works).
    recorded, timings = await _recording_service(pg_engine)
    await pull_fn(recorded, ALICE)
    assert clock.calls == 2 * len(ALL_STAGES)
    assert len(timings) == len(ALL_STAGES)


async def test_log_variant_logs_each_stage_at_debug(
    pg_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    service = await make_service(pg_engine, log_stage_timings=True)
    await _commit(service, 2)
    caplog.set_level(logging.DEBUG, logger="oversync_sa.server.stages")

    await pull_encoded(service, ALICE)

    records = [r for r in caplog.records if r.name == "oversync_sa.server.stages"]
    assert all(r.levelno == logging.DEBUG for r in records)
    logged = sorted(r.getMessage().split()[1] for r in records)
    assert logged == sorted(f"pull.{stage}" for stage in ALL_STAGES)
