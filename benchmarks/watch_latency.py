"""Watch latency: commit reply -> ``GET /sync/watch`` wake-up event, same and cross worker.

The reference server runs as real processes (:class:`~benchmarks._servers.ServerFleet`: two
single-worker servers on their own ports over one database, so the benchmark knows which worker
serves what; each variant uses a user of its own). N subscribers of one user hold SSE streams
(``GET /sync/watch``, SERVER.md §7.4) on worker A; another device of the same user commits
small pushes one after another, on worker A itself (``same worker``) or on worker B (``cross
worker``: the wake-up travels from B's commit through PostgreSQL ``NOTIFY`` to A's ``LISTEN``
connection).

For every commit, each subscriber's latency is measured from the moment the commit became
visible to the moment its ``event: bundle`` arrived: the benchmark process itself also runs
``LISTEN`` on the server's notify channel over a plain asyncpg connection, and the commit's
reference time is the earlier of that raw notification and the commit reply reaching the pushing
device (in practice the notification: PostgreSQL delivers it at commit, before the HTTP answer
is written, so "commit reply -> wake" alone is mostly negative; its signed p50 is in the notes).
The figure is therefore what the watch path adds on top of PostgreSQL's own delivery: the
server's listener, the hub, the SSE write and the HTTP client.

Baseline: the raw mechanism underneath - asyncpg ``SELECT pg_notify(...)`` in autocommit on one
connection, delivery to an asyncpg ``LISTEN`` callback on another, timed from the statement's
return. Target: p50 < 50 ms, no errors (a missing wake-up within 10 s is an error).

Under ``--scale`` the push and subscriber counts shrink (at least 3 pushes, 2 subscribers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

import asyncpg
import httpx

from benchmarks._harness import (
    BenchContext,
    LatencyMeasurement,
    Measurement,
    percentile,
    scale_main,
)
from benchmarks._servers import ServerFleet, serving
from benchmarks.http_load import Device, Stats
from oversync_sa.testing import asyncpg_dsn

__all__ = ["main", "run"]

NAME: Final = "watch"
PUSHES: Final = 100
SUBSCRIBERS: Final = 10
P50_TARGET: Final = 0.050
#: A wake-up not seen this long after the commit reply counts as an error.
WAKE_TIMEOUT: Final = 10.0
_BASELINE_CHANNEL: Final = "oversync_bench_watch_baseline"
#: The server's default bundle-change channel (SERVER.md §7.4; the example keeps the default).
SERVER_CHANNEL: Final = "oversync_bundle_change_v1"


@dataclass
class _Subscriber:
    """One SSE stream; ``arrivals`` maps each woken ``bundle_seq`` to its arrival time."""

    index: int
    client: httpx.AsyncClient
    response: httpx.Response | None = None
    arrivals: dict[int, float] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def highest(self) -> int:
        return max(self.arrivals, default=0)

    async def open(self, token: str) -> None:
        headers = {
            "Authorization": f"Bearer {token}",
            "Oversync-Source-ID": f"watch-subscriber-{self.index}",
        }
        request = self.client.build_request(
            "GET", "/sync/watch", params={"after_bundle_seq": "0"}, headers=headers
        )
        # Headers arrive only after the server registered the subscription (watch_route).
        self.response = await self.client.send(request, stream=True)
        if self.response.status_code != 200:
            body = (await self.response.aread())[:200]
            raise RuntimeError(f"watch answered {self.response.status_code}: {body!r}")

    async def read(self) -> None:
        assert self.response is not None
        event = ""
        async for line in self.response.aiter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event == "bundle":
                arrived = time.perf_counter()
                data = json.loads(line.partition(":")[2])
                self.arrivals.setdefault(int(data["bundle_seq"]), arrived)
                self.sources.append(str(data.get("source_id", "")))
                self.changed.set()
            elif not line:
                event = ""

    async def wait_for(self, seq: int, deadline: float) -> float | None:
        """Arrival time of the first event at or past ``seq`` (``None`` after the deadline)."""
        while True:
            found = [t for s, t in self.arrivals.items() if s >= seq]
            if found:
                return min(found)
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


@dataclass
class _Samples:
    latencies: list[float] = field(default_factory=list)
    #: Wake arrival minus commit reply (signed: negative = the wake-up came first).
    after_reply: list[float] = field(default_factory=list)
    early: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


class _CommitWitness:
    """A plain asyncpg ``LISTEN`` on the server's channel: when each bundle became visible."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self._conn: asyncpg.Connection | None = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            self.seen.setdefault(int(json.loads(payload)["bundle_seq"]), time.perf_counter())

    async def start(self, database_url: str) -> None:
        self._conn = await asyncpg.connect(asyncpg_dsn(database_url))
        await self._conn.add_listener(SERVER_CHANNEL, self._on_notify)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


async def _measure_wakes(
    database_url: str, writer_url: str, watch_url: str, subscribers: int, pushes: int,
    writer_index: int,
) -> _Samples:
    samples = _Samples()
    witness = _CommitWitness()
    await witness.start(database_url)
    writer_client = httpx.AsyncClient(base_url=writer_url, timeout=30.0)
    subs = [
        _Subscriber(i, httpx.AsyncClient(base_url=watch_url, timeout=None))
        for i in range(subscribers)
    ]
    readers: list[asyncio.Task[None]] = []
    try:
        writer = Device(writer_index, writer_client)
        setup = Stats()
        if not await writer.sign_in_and_connect(setup):
            raise RuntimeError(f"writer could not attach: {setup.errors[:3]}")
        token = writer.headers["Authorization"].removeprefix("Bearer ")
        await asyncio.gather(*(s.open(token) for s in subs))
        readers = [asyncio.create_task(s.read()) for s in subs]
        stats = Stats()
        started = time.perf_counter()
        for _ in range(pushes):
            if not await writer.push(stats):
                samples.errors.extend(stats.errors[-1:])
                break
            replied = time.perf_counter()
            seq = writer.last_bundle_seq
            arrivals = await asyncio.gather(
                *(s.wait_for(seq, replied + WAKE_TIMEOUT) for s in subs)
            )
            visible = min(replied, witness.seen.get(seq, replied))
            for sub, arrived in zip(subs, arrivals, strict=True):
                if arrived is None:
                    samples.errors.append(f"subscriber {sub.index}: no wake-up for {seq}")
                    continue
                if arrived < replied:
                    samples.early += 1
                samples.after_reply.append(arrived - replied)
                # Both clocks are this event loop's; a wake-up handled before the witness's
                # callback ran is a tie, not a negative latency.
                samples.latencies.append(max(0.0, arrived - visible))
        samples.seconds = time.perf_counter() - started
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for sub in subs:
            if sub.response is not None:
                await sub.response.aclose()
        await asyncio.gather(writer_client.aclose(), *(s.client.aclose() for s in subs))
        await witness.close()
    return samples


async def _notify_baseline(database_url: str, count: int) -> _Samples:
    """Raw ``pg_notify`` -> ``LISTEN`` callback latency over two asyncpg connections."""
    samples = _Samples()
    arrivals: dict[int, float] = {}
    arrived = asyncio.Event()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        arrivals[int(payload)] = time.perf_counter()
        arrived.set()

    listener = await asyncpg.connect(asyncpg_dsn(database_url))
    notifier = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await listener.add_listener(_BASELINE_CHANNEL, on_notify)
        started = time.perf_counter()
        for n in range(count):
            await notifier.execute("SELECT pg_notify($1, $2)", _BASELINE_CHANNEL, str(n))
            replied = time.perf_counter()
            deadline = replied + WAKE_TIMEOUT
            while n not in arrivals and time.perf_counter() < deadline:
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), deadline - time.perf_counter())
            if n not in arrivals:
                samples.errors.append(f"notification {n} not delivered")
                continue
            samples.latencies.append(max(0.0, arrivals[n] - replied))
        samples.seconds = time.perf_counter() - started
    finally:
        await listener.close()
        await notifier.close()
    return samples


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def measure_variant(
    database_url: str, urls: list[str], *, cross_worker: bool, subscribers: int, pushes: int
) -> LatencyMeasurement:
    """Subscribers on worker A (``urls[0]``), commits on A or on B (``urls[1]``).

    Each variant has a user of its own (the writer's device index picks it).
    """
    writer_url = urls[1] if cross_worker else urls[0]
    wakes = await _measure_wakes(
        database_url, writer_url, urls[0], subscribers, pushes, 2 if cross_worker else 0
    )
    baseline = await _notify_baseline(database_url, pushes)
    where = "cross worker: subscribers on A, commits on B" if cross_worker else "same worker"
    p50, p99 = percentile(wakes.latencies, 0.5), percentile(wakes.latencies, 0.99)
    notes = [
        f"{pushes} commits of {subscribers} subscribers' user ({where}); "
        f"{len(wakes.latencies)} wake-ups timed from the commit's raw NOTIFY (seen by the "
        f"benchmark's own LISTEN); {wakes.early} arrived before the commit reply",
        f"commit reply -> wake (signed) p50 {_ms(percentile(wakes.after_reply, 0.5))}, p99 "
        f"{_ms(percentile(wakes.after_reply, 0.99))}",
        f"wake latency p50 {_ms(p50)}, p99 {_ms(p99)}, max "
        f"{_ms(max(wakes.latencies, default=0.0))} (target p50 < {_ms(P50_TARGET)}: "
        f"{'MET' if p50 < P50_TARGET and not wakes.errors else 'MISSED'})",
        f"raw NOTIFY -> LISTEN p50 {_ms(percentile(baseline.latencies, 0.5))}, p99 "
        f"{_ms(percentile(baseline.latencies, 0.99))}",
        f"errors: {len(wakes.errors)} (baseline: {len(baseline.errors)}); 1-min load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        *[f"error: {e}" for e in wakes.errors[:5]],
    ]
    return LatencyMeasurement(
        benchmark=NAME,
        name=f"wake ({subscribers} subs, {'cross worker' if cross_worker else 'same worker'})",
        rows=max(1, len(wakes.latencies)),
        seconds=wakes.seconds,
        baseline="asyncpg pg_notify -> LISTEN callback, same count",
        baseline_seconds=baseline.seconds,
        target_ratio=0.0,
        notes=notes,
        p50_seconds=p50,
        p99_seconds=p99,
        baseline_p50_seconds=percentile(baseline.latencies, 0.5),
        baseline_p99_seconds=percentile(baseline.latencies, 0.99),
        target_percentile="p50",
        target_seconds=P50_TARGET,
        errors=len(wakes.errors),
    )


async def run(ctx: BenchContext) -> list[Measurement]:
    subscribers = ctx.size(SUBSCRIBERS, minimum=2)
    pushes = ctx.size(PUSHES, minimum=3)
    # Two single-worker servers over one database serve both variants.
    fleet_of_two = partial(ServerFleet, count=2, pool_max=10)
    async with serving(ctx.server, fleet_of_two) as (fleet, database_url):
        return [
            await measure_variant(
                database_url, fleet.base_urls, cross_worker=cross, subscribers=subscribers,
                pushes=pushes,
            )
            for cross in (False, True)
        ]


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.watch_latency [--scale S]``: this module alone."""
    return scale_main(run, argv, module="watch_latency", description=__doc__,
                      output=Path(__file__).with_name("results-watch.json"))


if __name__ == "__main__":
    raise SystemExit(main())
