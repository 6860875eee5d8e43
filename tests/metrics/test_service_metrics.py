"""A real SyncService on PostgreSQL reports every operation to the Prometheus observer."""

from __future__ import annotations

import logging
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import (
    BundleChangeWatchDisabledError,
    HistoryPrunedError,
    PushConflictError,
)
from oversync_sa.server import Actor, BundleChangeWatchConfig, ServiceConfig, SyncService
from oversync_sa.server.observer import SyncObserver
from oversync_sa.wire.models import ConnectRequest, SnapshotSessionCreateRequest
from tests.metrics._support import observed_service, push, sample, user_row

pytestmark = pytest.mark.postgres

ALICE = Actor("alice", "alice-phone")
EMPTY = ConnectRequest(has_local_pending_rows=False)


async def test_push_pull_and_snapshot_are_counted_and_timed(pg_engine: AsyncEngine) -> None:
    service, observer = await observed_service(pg_engine)
    registry = observer.registry
    await service.connect(ALICE, EMPTY)
    first = await push(service, ALICE, 1, [user_row(uuid.uuid4(), "ann"),
                                           user_row(uuid.uuid4(), "bob")])
    second = await push(service, ALICE, 2, [user_row(uuid.uuid4(), "cy")])
    assert (first.row_count, second.row_count) == (2, 1)
    assert [b.bundle_seq for b in (await service.pull(ALICE)).bundles] == [1, 2]
    snapshot = await service.create_snapshot_session(ALICE, SnapshotSessionCreateRequest())
    assert snapshot.row_count == 3
    await service.snapshot_chunk(ALICE, snapshot.snapshot_id)
    await service.delete_snapshot_session(ALICE, snapshot.snapshot_id)

    assert sample(registry, "oversync_push_bundles_committed_total") == 2
    assert sample(registry, "oversync_push_rows_committed_total") == 3
    expected = {
        "connect": 1, "push_create": 2, "push_chunk": 2, "push_commit": 2, "pull": 1,
        "snapshot_create": 1, "snapshot_chunk": 1, "snapshot_delete": 1,
    }
    for operation, count in expected.items():
        assert sample(
            registry, "oversync_operations_total", operation=operation, outcome="ok"
        ) == count, operation
        assert sample(
            registry, "oversync_operation_duration_seconds_count", operation=operation
        ) == count, operation
    assert sample(
        registry, "oversync_operation_duration_seconds_count", operation="watch_subscribe"
    ) == 0
    # The §7.5 stage timings reach the same registry through stage_recorder.
    assert sample(
        registry, "oversync_stage_duration_seconds_count", operation="pull", stage="total"
    ) == 1
    assert sample(registry, "oversync_stage_errors_total", operation="pull", stage="total") == 0


async def test_conflict_is_counted_by_table_and_outcome(pg_engine: AsyncEngine) -> None:
    service, observer = await observed_service(pg_engine)
    registry = observer.registry
    await service.connect(ALICE, EMPTY)
    key = uuid.uuid4()
    await push(service, ALICE, 1, [user_row(key, "ann")])

    with pytest.raises(PushConflictError):  # an INSERT of a row the server already has
        await push(service, ALICE, 2, [user_row(key, "again")])

    assert sample(registry, "oversync_push_conflicts_total", table="business.users") == 1
    assert sample(
        registry, "oversync_operations_total", operation="push_commit", outcome="push_conflict"
    ) == 1
    assert sample(registry, "oversync_operations_total", operation="push_commit", outcome="ok") == 1
    assert sample(registry, "oversync_push_bundles_committed_total") == 1
    assert sample(registry, "oversync_push_rows_committed_total") == 1


async def test_history_pruned_is_counted_per_operation(pg_engine: AsyncEngine) -> None:
    service, observer = await observed_service(pg_engine)
    registry = observer.registry
    await service.connect(ALICE, EMPTY)
    await push(service, ALICE, 1, [user_row(uuid.uuid4(), "ann")])
    await push(service, ALICE, 2, [user_row(uuid.uuid4(), "bob")])
    async with pg_engine.begin() as conn:
        await conn.execute(sa.text(
            "UPDATE sync.user_state SET retained_bundle_floor = 1 WHERE user_id = 'alice'"
        ))

    with pytest.raises(HistoryPrunedError):
        await service.pull(ALICE, after_bundle_seq=1)
    with pytest.raises(HistoryPrunedError):
        await service.pull(ALICE, after_bundle_seq=1)
    with pytest.raises(HistoryPrunedError):
        await service.committed_bundle_rows(ALICE, 1)
    await service.pull(ALICE, after_bundle_seq=2)  # above the floor: fine

    assert sample(registry, "oversync_history_pruned_total", operation="pull") == 2
    assert sample(registry, "oversync_history_pruned_total", operation="committed_rows") == 1
    assert sample(
        registry, "oversync_operations_total", operation="pull", outcome="history_pruned"
    ) == 2
    assert sample(registry, "oversync_operations_total", operation="pull", outcome="ok") == 1


async def test_watch_subscriber_gauge_follows_subscriptions(pg_engine: AsyncEngine) -> None:
    service, observer = await observed_service(
        pg_engine, bundle_change_watch=BundleChangeWatchConfig(enabled=True)
    )
    registry = observer.registry
    await service.connect(ALICE, EMPTY)
    phone = await service.watch(ALICE, 0)
    laptop = await service.watch(Actor("alice", "alice-laptop"), 0)
    assert sample(registry, "oversync_watch_subscribers") == 2
    phone.close()
    phone.close()  # idempotent: must not count twice
    assert sample(registry, "oversync_watch_subscribers") == 1
    assert sample(
        registry, "oversync_operations_total", operation="watch_subscribe", outcome="ok"
    ) == 2

    await service.close()  # ends the remaining stream
    assert laptop.closed
    assert sample(registry, "oversync_watch_subscribers") == 0


async def test_refused_watch_reports_its_error_code(pg_engine: AsyncEngine) -> None:
    service, observer = await observed_service(pg_engine)  # watch disabled
    with pytest.raises(BundleChangeWatchDisabledError):
        await service.watch(ALICE, 0)
    assert sample(
        observer.registry, "oversync_operations_total",
        operation="watch_subscribe", outcome="bundle_change_watch_disabled",
    ) == 1
    assert sample(observer.registry, "oversync_watch_subscribers") == 0


class _Broken(SyncObserver):
    def operation_finished(self, operation: str, duration: float, outcome: str) -> None:
        raise RuntimeError("observer bug")

    def push_committed(self, user_id: str, rows: int, bundles: int, duration: float) -> None:
        raise RuntimeError("observer bug")


async def test_a_failing_observer_never_fails_the_request(
    pg_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    service, _ = await observed_service(pg_engine)
    broken = SyncService(pg_engine, ServiceConfig(
        registered_tables=service.config.registered_tables, observer=_Broken()
    ))
    await broken.bootstrap()
    await broken.connect(ALICE, EMPTY)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="oversync_sa.server.observer"):
        committed = await push(broken, ALICE, 1, [user_row(uuid.uuid4(), "ann")])
    assert committed.bundle_seq == 1
    failures = [r for r in caplog.records if r.name == "oversync_sa.server.observer"]
    # create, chunk, commit each report operation_finished; commit also push_committed.
    assert len(failures) == 4
    assert all(r.exc_info is not None for r in failures)
