"""Pull (SERVER.md §6.2): scope gate, frozen ceiling, paging, floor checks, concurrency."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import msgspec
import pytest

from oversync_sa.errors import (
    HistoryPrunedError,
    InvalidRequestError,
    ScopeInitializingError,
    ScopeUninitializedError,
)
from oversync_sa.server import SyncService, pull as pull_module
from oversync_sa.server.pull import (
    EncodedPullPage,
    pull,
    pull_encoded,
    resolve_stable_bundle_seq,
)
from oversync_sa.wire.hashing import bundle_hash_of_received_rows
from oversync_sa.wire.models import PullResponse
from tests.server.reading._support import Actor, execute, note_inserts, scalar, set_floor, write

ALICE = Actor("alice")


def _seqs(response: PullResponse) -> list[int]:
    return [b.bundle_seq for b in response.bundles]


async def _pruned_count(service: SyncService) -> int:
    return int(
        await scalar(
            service.engine,
            "SELECT coalesce(pg_sequence_last_value('sync.history_pruned_error_seq'), 0)",
        )
    )


_batch = itertools.count()


async def _commit(service: SyncService, user: str, count: int, rows: int = 1) -> None:
    for _ in range(count):
        await write(service, user, note_inserts(f"{user}-{next(_batch)}-", rows))


async def test_never_connected_scope_is_uninitialized(service: SyncService) -> None:
    with pytest.raises(ScopeUninitializedError):
        await pull(service, ALICE)


@pytest.mark.parametrize(
    ("lease", "error"),
    [("now() + interval '5 minutes'", ScopeInitializingError),
     ("now() - interval '1 second'", ScopeUninitializedError)],
)
async def test_initializing_scope_is_gated_by_its_lease(
    service: SyncService, lease: str, error: type[Exception]
) -> None:
    await execute(
        service.engine,
        "INSERT INTO sync.user_state (user_id) VALUES ('alice')",
        "INSERT INTO sync.scope_state (user_pk, state_code, initializer_source_id, "
        "initialization_id, lease_expires_at) "
        f"SELECT user_pk, 1, 'dev', gen_random_uuid(), {lease} "
        "FROM sync.user_state WHERE user_id = 'alice'",
    )
    with pytest.raises(error):
        await pull(service, ALICE)


async def test_pages_to_a_frozen_ceiling_with_target(service: SyncService) -> None:
    await _commit(service, "alice", 3, rows=2)
    await _commit(service, "bob", 4)

    first = await pull(service, ALICE, max_bundles=2)
    assert (first.stable_bundle_seq, _seqs(first), first.has_more) == (3, [1, 2], True)
    assert all(b.row_count == len(b.rows) == 2 for b in first.bundles)
    # Commits after the first page stay above the frozen ceiling.
    await _commit(service, "alice", 2)
    second = await pull(service, ALICE, after_bundle_seq=2, target_bundle_seq=3, max_bundles=2)
    assert (second.stable_bundle_seq, _seqs(second), second.has_more) == (3, [3], False)
    fresh = await pull(service, ALICE, after_bundle_seq=3)
    assert (fresh.stable_bundle_seq, _seqs(fresh), fresh.has_more) == (5, [4, 5], False)


async def test_bundles_verify_and_belong_to_the_caller_only(service: SyncService) -> None:
    await _commit(service, "bob", 2, rows=3)
    await _commit(service, "alice", 1, rows=3)
    response = await pull(service, ALICE)
    (bundle,) = response.bundles
    assert {r.key["code"][:5] for r in bundle.rows} == {"alice"}
    assert bundle_hash_of_received_rows(bundle.rows)[0] == bundle.bundle_hash
    assert bundle.source_id == "server"


async def test_exact_max_bundles_boundary_and_empty_answers(service: SyncService) -> None:
    await _commit(service, "alice", 3)
    exact = await pull(service, ALICE, max_bundles=3)
    assert (_seqs(exact), exact.has_more) == ([1, 2, 3], False)
    caught_up = await pull(service, ALICE, after_bundle_seq=3)
    assert (caught_up.stable_bundle_seq, caught_up.bundles, caught_up.has_more) == (3, [], False)
    beyond = await pull(service, ALICE, after_bundle_seq=9)
    assert (beyond.stable_bundle_seq, beyond.bundles) == (3, [])


async def test_target_beyond_head_is_echoed(service: SyncService) -> None:
    await _commit(service, "alice", 2)
    response = await pull(service, ALICE, target_bundle_seq=10)
    assert (response.stable_bundle_seq, _seqs(response), response.has_more) == (10, [1, 2], False)


async def test_target_below_head_caps_the_page(service: SyncService) -> None:
    await _commit(service, "alice", 4)
    response = await pull(service, ALICE, after_bundle_seq=1, target_bundle_seq=2)
    assert (response.stable_bundle_seq, _seqs(response)) == (2, [2])


@pytest.mark.parametrize("max_bundles", [0, -5])
async def test_non_positive_max_bundles_means_default(
    service: SyncService, max_bundles: int
) -> None:
    await _commit(service, "alice", 2)
    assert _seqs(await pull(service, ALICE, max_bundles=max_bundles)) == [1, 2]


async def test_empty_initialized_scope(service: SyncService) -> None:
    await execute(
        service.engine,
        "INSERT INTO sync.user_state (user_id) VALUES ('alice')",
        "INSERT INTO sync.scope_state (user_pk, state_code, initialized_at, "
        "initialized_by_source_id) SELECT user_pk, 2, now(), 'dev' FROM sync.user_state",
    )
    response = await pull(service, ALICE)
    assert (response.stable_bundle_seq, response.bundles, response.has_more) == (0, [], False)


@pytest.mark.parametrize(
    ("after", "target"), [(1, 0), (2, 0), (1, 4), (0, 2), (3, 2)]
)
async def test_history_pruned_and_counted(service: SyncService, after: int, target: int) -> None:
    await _commit(service, "alice", 4)
    await set_floor(service.engine, "alice", 2)
    before = await _pruned_count(service)
    with pytest.raises(HistoryPrunedError):
        await pull(service, ALICE, after_bundle_seq=after, target_bundle_seq=target)
    assert await _pruned_count(service) == before + 1


async def test_after_zero_skips_pruned_history_silently(service: SyncService) -> None:
    await _commit(service, "alice", 4)
    await set_floor(service.engine, "alice", 2)
    response = await pull(service, ALICE)
    assert (response.stable_bundle_seq, _seqs(response)) == (4, [3, 4])
    # Everything retained pruned: the effective ceiling is at the floor.
    await set_floor(service.engine, "alice", 4)
    with pytest.raises(HistoryPrunedError):
        await pull(service, ALICE)
    assert await _pruned_count(service) == 1


def test_resolve_stable_bundle_seq_rules() -> None:
    assert resolve_stable_bundle_seq(head=7, floor=0, after=0, target=0) == 7
    assert resolve_stable_bundle_seq(head=0, floor=0, after=0, target=0) == 0
    assert resolve_stable_bundle_seq(head=7, floor=3, after=4, target=12) == 12
    with pytest.raises(HistoryPrunedError):
        resolve_stable_bundle_seq(head=3, floor=3, after=0, target=0)


@pytest.mark.parametrize(("after", "target"), [(-1, 0), (0, -1)])
async def test_negative_cursors_are_invalid(
    service: SyncService, after: int, target: int
) -> None:
    with pytest.raises(InvalidRequestError):
        await pull(service, ALICE, after_bundle_seq=after, target_bundle_seq=target)


async def test_concurrent_commits_never_yield_partial_bundles(service: SyncService) -> None:
    await _commit(service, "alice", 1, rows=3)
    stop = asyncio.Event()

    async def writer() -> int:
        done = 0
        while not stop.is_set() and done < 40:
            await write(service, "alice", note_inserts(f"w{done}-", 7))
            done += 1
        return done

    task = asyncio.create_task(writer())
    seen: list[int] = []
    ceilings: list[int] = []
    after = 0
    try:
        for _ in range(15):
            target = 0
            while True:
                page = await pull(
                    service, ALICE, after_bundle_seq=after, target_bundle_seq=target, max_bundles=1
                )
                if target:
                    assert page.stable_bundle_seq == target
                for bundle in page.bundles:
                    assert bundle.row_count == len(bundle.rows)
                    assert bundle_hash_of_received_rows(bundle.rows)[0] == bundle.bundle_hash
                    assert bundle.bundle_seq <= page.stable_bundle_seq
                    seen.append(bundle.bundle_seq)
                    after = bundle.bundle_seq
                target = page.stable_bundle_seq
                if not page.has_more:
                    break
            ceilings.append(target)
            await asyncio.sleep(0)
    finally:
        stop.set()
        committed = await task
    assert ceilings == sorted(ceilings)
    assert seen == list(range(1, len(seen) + 1))
    assert committed > 0


# --- pull_encoded reads the scope and the page as two autocommit statements -------------------


def _prune_after_scope_read(
    monkeypatch: pytest.MonkeyPatch, service: SyncService, floor: int
) -> None:
    """Let retention prune through ``floor`` right after the pull has read the scope row."""
    real = pull_module.read_scope

    async def read_then_prune(conn: Any, user_id: str) -> Any:
        scope = await real(conn, user_id)
        await execute(
            service.engine,
            "DELETE FROM sync.bundle_rows WHERE user_pk = "
            "(SELECT user_pk FROM sync.user_state WHERE user_id = :u) AND bundle_seq <= :f",
            "DELETE FROM sync.bundle_log WHERE user_pk = "
            "(SELECT user_pk FROM sync.user_state WHERE user_id = :u) AND bundle_seq <= :f",
            "UPDATE sync.user_state SET retained_bundle_floor = :f WHERE user_id = :u",
            u=user_id,
            f=floor,
        )
        return scope

    monkeypatch.setattr(pull_module, "read_scope", read_then_prune)


def _encoded_seqs(page: EncodedPullPage) -> list[int]:
    body = msgspec.json.decode(msgspec.json.encode(page.wire))
    return [b["bundle_seq"] for b in body["bundles"]]


async def test_prune_between_scope_and_page_answers_history_pruned(
    service: SyncService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _commit(service, "alice", 4)
    _prune_after_scope_read(monkeypatch, service, 2)
    before = await _pruned_count(service)
    # Bundle 2 was deleted under the page: without the second floor check the page would
    # silently start at 3.
    with pytest.raises(HistoryPrunedError, match="at or below the retained floor 2"):
        await pull_encoded(service, ALICE, after_bundle_seq=1)
    assert await _pruned_count(service) == before + 1


async def test_prune_between_scope_and_page_below_the_checkpoint_is_harmless(
    service: SyncService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _commit(service, "alice", 4)
    _prune_after_scope_read(monkeypatch, service, 2)
    page = await pull_encoded(service, ALICE, after_bundle_seq=3)
    assert (page.stable_bundle_seq, _encoded_seqs(page)) == (4, [4])
    # A fresh reader (after 0) starts above whatever the floor is by then.
    _prune_after_scope_read(monkeypatch, service, 3)
    page = await pull_encoded(service, ALICE)
    assert (page.stable_bundle_seq, _encoded_seqs(page)) == (4, [4])


async def test_prune_of_the_whole_page_range_answers_history_pruned(
    service: SyncService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _commit(service, "alice", 4)
    _prune_after_scope_read(monkeypatch, service, 4)
    with pytest.raises(HistoryPrunedError, match="stable bundle_seq 4"):
        await pull_encoded(service, ALICE)


async def test_struct_pull_keeps_one_snapshot(
    service: SyncService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _commit(service, "alice", 4)
    _prune_after_scope_read(monkeypatch, service, 2)
    # The REPEATABLE READ snapshot was taken by the scope read: the page still sees bundle 2.
    assert _seqs(await pull(service, ALICE, after_bundle_seq=1)) == [2, 3, 4]


async def test_scope_removed_between_scope_and_page_is_uninitialized(
    service: SyncService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _commit(service, "alice", 2)
    real = pull_module.read_scope

    async def read_then_reset(conn: Any, user_id: str) -> Any:
        scope = await real(conn, user_id)
        # What a reset does to the user: its state row and (cascading) its history go.
        await execute(service.engine, "DELETE FROM sync.user_state WHERE user_id = :u", u=user_id)
        return scope

    monkeypatch.setattr(pull_module, "read_scope", read_then_reset)
    with pytest.raises(ScopeUninitializedError):
        await pull_encoded(service, ALICE)
