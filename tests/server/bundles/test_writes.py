"""within_sync_bundle and ScopeManager.exec_write (§7.3, §3.7, §11.8)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import (
    HistoryPrunedError,
    ScopeInitializingError,
    ScopeUninitializedError,
    ScopeWriteNoCapturedChangesError,
    SourceRetiredError,
    SourceSequenceOutOfOrderError,
)
from oversync_sa.server import ServiceClosedError, SyncService, TransactionControlError
from oversync_sa.server.locks import user_transaction
from oversync_sa.server.scope import ScopeState, lock_scope, read_scope, transition_to_initializing
from oversync_sa.server.sources import load_source_state, retire_source
from oversync_sa.server.writes import (
    BundleSource,
    BundleWriter,
    ScopeManager,
    ScopeWriteInvalidError,
    within_sync_bundle,
)
from tests.server.bundles._support import exec_write, fetch, sql

INSERT_TAG = "INSERT INTO business.tags (code) VALUES ('t{n}')"


async def _initialize(service: SyncService, user: str) -> None:
    await exec_write(
        service, user, sql("INSERT INTO business.tags (code) VALUES ('seed')"), writer="seeder"
    )


async def _scope_state(engine: AsyncEngine, user: str) -> ScopeState | None:
    async with engine.connect() as conn:
        scope = await read_scope(conn, user)
    return None if scope is None else scope.state


async def test_exec_write_auto_initializes_and_allocates_next_source_bundle_ids(
    service: SyncService,
) -> None:
    manager = ScopeManager(service)
    first = await manager.exec_write("alice", sql(INSERT_TAG.format(n=1)), writer_id=" srv ")
    second = await manager.exec_write("alice", sql(INSERT_TAG.format(n=2)), writer_id="srv")
    other_scope = await manager.exec_write("bob", sql(INSERT_TAG.format(n=1)), writer_id="srv")
    assert first.auto_initialized
    assert not second.auto_initialized
    assert (first.bundle.source_id, first.bundle.source_bundle_id) == ("srv", 1)
    assert (second.bundle.bundle_seq, second.bundle.source_bundle_id) == (2, 2)
    assert (other_scope.bundle.bundle_seq, other_scope.bundle.source_bundle_id) == (1, 1)
    rows = await fetch(
        service.engine,
        "SELECT s.state_code, s.initialized_by_source_id, t.max_committed_source_bundle_id "
        "FROM sync.scope_state s JOIN sync.user_state u USING (user_pk) "
        "JOIN sync.source_state t USING (user_pk) WHERE u.user_id = 'alice'",
    )
    assert tuple(rows[0]) == (2, "srv", 2)


async def test_exec_write_without_visible_changes_rolls_back_everything(
    service: SyncService,
) -> None:
    writes = sql(
        "INSERT INTO business.audit (note) VALUES ('side effect');"
        "INSERT INTO business.tags (code) VALUES ('tmp');"
        "DELETE FROM business.tags WHERE _sync_scope_id = :scope AND code = 'tmp'"
    )
    with pytest.raises(ScopeWriteNoCapturedChangesError, match="alice via srv"):
        await ScopeManager(service).exec_write("alice", writes, writer_id="srv")
    assert await fetch(service.engine, "SELECT * FROM business.audit") == []
    assert await _scope_state(service.engine, "alice") is None  # even the user row is gone


async def test_exec_write_never_bypasses_a_live_initialization_lease(
    service: SyncService,
) -> None:
    async with user_transaction(service.engine, "alice") as conn:
        scope = await lock_scope(conn, "alice")
        await transition_to_initializing(
            conn, scope, "device", service.config.initialization_lease_ttl
        )
    with pytest.raises(ScopeInitializingError, match="initializing until"):
        await exec_write(service, "alice", sql(INSERT_TAG.format(n=1)))
    assert await _scope_state(service.engine, "alice") is ScopeState.INITIALIZING


@pytest.mark.parametrize(
    ("scope_id", "writer_id", "message"),
    [(" ", "w", "scope_id is required"), ("s", " ", "writer_id is required")],
)
async def test_exec_write_validates_arguments(
    service: SyncService, scope_id: str, writer_id: str, message: str
) -> None:
    with pytest.raises(ScopeWriteInvalidError, match=message):
        await ScopeManager(service).exec_write(scope_id, sql("SELECT 1"), writer_id=writer_id)


async def test_within_sync_bundle_requires_an_initialized_scope(service: SyncService) -> None:
    with pytest.raises(ScopeUninitializedError):
        await within_sync_bundle(service, "alice", BundleSource("w", 1), sql("SELECT 1"))
    # The ensure-row side effect is rolled back together with the failed transaction.
    assert await _scope_state(service.engine, "alice") is None


async def test_within_sync_bundle_enforces_the_exact_next_source_bundle_id(
    service: SyncService,
) -> None:
    await _initialize(service, "alice")
    with pytest.raises(SourceSequenceOutOfOrderError, match="expected source_bundle_id 1"):
        await within_sync_bundle(service, "alice", BundleSource("w", 2), sql("SELECT 1"))
    bundle = await within_sync_bundle(
        service, "alice", BundleSource("w", 1), sql(INSERT_TAG.format(n=1))
    )
    assert bundle is not None
    assert bundle.source_bundle_id == 1
    with pytest.raises(HistoryPrunedError, match="watermark 1"):
        await within_sync_bundle(service, "alice", BundleSource("w", 1), sql("SELECT 1"))


async def test_within_sync_bundle_empty_result_commits_without_consuming_a_sequence(
    service: SyncService,
) -> None:
    await _initialize(service, "alice")
    result = await within_sync_bundle(
        service,
        "alice",
        BundleSource("w", 1),
        sql("INSERT INTO business.audit (note) VALUES ('kept')"),
    )
    assert result is None
    assert [r[0] for r in await fetch(service.engine, "SELECT note FROM business.audit")] == [
        "kept"
    ]
    again = await within_sync_bundle(
        service, "alice", BundleSource("w", 1), sql(INSERT_TAG.format(n=1))
    )
    assert again is not None
    assert again.bundle_seq == 2


async def test_retired_source_cannot_write(service: SyncService) -> None:
    await _initialize(service, "alice")
    async with user_transaction(service.engine, "alice") as conn:
        scope = await lock_scope(conn, "alice")
        await retire_source(conn, scope.user_pk, "old", replaced_by="new", reason="history_pruned")
    with pytest.raises(SourceRetiredError) as info:
        await within_sync_bundle(service, "alice", BundleSource("old", 1), sql("SELECT 1"))
    assert info.value.replaced_by_source_id == "new"
    with pytest.raises(SourceRetiredError):
        await exec_write(service, "alice", sql(INSERT_TAG.format(n=1)), writer="old")


@pytest.mark.parametrize(
    ("source", "message"),
    [(BundleSource(" ", 1), "source_id is required"), (BundleSource("w", 0), "must be > 0")],
)
async def test_within_sync_bundle_validates_arguments(
    service: SyncService, source: BundleSource, message: str
) -> None:
    with pytest.raises(ScopeWriteInvalidError, match=message):
        await within_sync_bundle(service, "alice", source, sql("SELECT 1"))


async def test_callback_failure_rolls_back_and_releases_the_user_lock(
    service: SyncService,
) -> None:
    async def boom(writer: BundleWriter) -> None:
        await writer.connection.execute(sa.text("INSERT INTO business.tags (code) VALUES ('x')"))
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        await exec_write(service, "alice", boom)
    assert await fetch(service.engine, "SELECT * FROM business.tags") == []
    bundle = await exec_write(service, "alice", sql(INSERT_TAG.format(n=1)))
    assert bundle.bundle_seq == 1


async def test_writes_count_as_in_flight_operations(service: SyncService) -> None:
    seen: list[int] = []

    async def observe(writer: BundleWriter) -> None:
        seen.append(service.in_flight)
        await sql(INSERT_TAG.format(n=1))(writer)

    await exec_write(service, "alice", observe)
    assert seen == [1]
    await service.close()
    with pytest.raises(ServiceClosedError):
        await exec_write(service, "alice", sql(INSERT_TAG.format(n=2)))
    with pytest.raises(ServiceClosedError):
        await within_sync_bundle(service, "alice", BundleSource("w", 1), sql("SELECT 1"))


async def test_bundle_seq_is_gap_free_under_concurrent_writers(service: SyncService) -> None:
    writers = [f"w{i}" for i in range(4)]

    async def burst(scope: str, writer: str) -> list[int]:
        seqs = []
        for n in range(4):
            bundle = await exec_write(
                service,
                scope,
                sql(f"INSERT INTO business.tags (code) VALUES ('{writer}-{n}')"),
                writer=writer,
            )
            seqs.append(bundle.bundle_seq)
        return seqs

    results = await asyncio.gather(
        *(burst(scope, w) for scope in ("alice", "bob") for w in writers)
    )
    for offset in (0, len(writers)):
        seqs = sorted(s for r in results[offset : offset + len(writers)] for s in r)
        assert seqs == list(range(1, 17))
    rows = await fetch(
        service.engine,
        "SELECT u.user_id, count(*), max(l.bundle_seq), min(u.next_bundle_seq) "
        "FROM sync.bundle_log l JOIN sync.user_state u USING (user_pk) GROUP BY 1 ORDER BY 1",
    )
    assert [tuple(r) for r in rows] == [("alice", 16, 16, 17), ("bob", 16, 16, 17)]
    async with service.engine.connect() as conn:
        alice = await read_scope(conn, "alice")
        assert alice is not None
        for writer in writers:
            state = await load_source_state(conn, alice.user_pk, writer)
            assert state is not None
            assert state.max_committed_source_bundle_id == 4


async def test_connection_rollback_in_a_callback_rolls_back_and_raises(
    service: SyncService,
) -> None:
    async def undo(writer: BundleWriter) -> None:
        await writer.connection.execute(sa.text(INSERT_TAG.format(n=7)))
        await writer.connection.rollback()

    with pytest.raises(TransactionControlError, match="rolled back"):
        await exec_write(service, "alice", undo)
    assert await fetch(service.engine, "SELECT code FROM business.tags") == []
    # Nothing was committed, the scope initialization included.
    assert await _scope_state(service.engine, "alice") in (None, ScopeState.UNINITIALIZED)
