"""SyncService is the one entry point: every wire operation works through it end to end."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.business_models import REGISTER_ORDER, BusinessBase
from oversync_sa.errors import PushSessionNotFoundError, ServiceUnavailableError
from oversync_sa.metadata import server_projection
from oversync_sa.server import (
    Actor,
    BundleChangeWatchConfig,
    BundleSource,
    BundleWriter,
    ServiceClosedError,
    ServiceConfig,
    SyncService,
)
from oversync_sa.wire.models import (
    ConnectRequest,
    PushRequestRow,
    PushSessionChunkRequest,
    PushSessionCreateRequest,
    SnapshotSessionCreateRequest,
)

ALICE = Actor("alice", "alice-phone")


async def _service(engine: AsyncEngine, **overrides: object) -> SyncService:
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE SCHEMA business"))
        await conn.run_sync(server_projection(BusinessBase).create_all)
    config = ServiceConfig.from_models(BusinessBase, schema="business", **overrides)
    service = SyncService(engine, config)
    await service.bootstrap()
    return service


def _user_row(key: str, name: str) -> PushRequestRow:
    payload = {"id": key, "name": name, "email": f"{name}@example.com"}
    return PushRequestRow(
        schema="business",
        table="users",
        key={"id": key},
        op="INSERT",
        base_row_version=0,
        payload=msgspec.Raw(msgspec.json.encode(payload)),
    )


async def test_config_from_models_registers_the_example_tables(pg_engine: AsyncEngine) -> None:
    service = await _service(pg_engine)
    assert [t.table for t in service.config.registered_tables] == list(REGISTER_ORDER)
    assert {t.name for t in service.runtime.tables} == {f"business.{t}" for t in REGISTER_ORDER}


async def test_push_pull_snapshot_round_trip_through_the_facade(pg_engine: AsyncEngine) -> None:
    service = await _service(pg_engine)
    connected = await service.connect(ALICE, ConnectRequest(has_local_pending_rows=False))
    assert connected.resolution == "initialize_empty"

    key = str(uuid.uuid4())
    created = await service.create_push_session(
        ALICE, PushSessionCreateRequest(source_bundle_id=1, planned_row_count=1)
    )
    assert created.push_id
    chunk = await service.upload_push_chunk(
        ALICE,
        created.push_id,
        PushSessionChunkRequest(start_row_ordinal=0, rows=[_user_row(key, "ann")]),
    )
    assert chunk.next_expected_row_ordinal == 1
    committed = await service.commit_push_session(ALICE, created.push_id)
    assert (committed.bundle_seq, committed.row_count) == (1, 1)

    rows = await service.committed_bundle_rows(ALICE, committed.bundle_seq)
    assert rows.bundle_hash == committed.bundle_hash
    assert [r.key for r in rows.rows] == [{"id": key}]

    pulled = await service.pull(ALICE)
    assert pulled.stable_bundle_seq == 1
    assert [b.bundle_seq for b in pulled.bundles] == [1]

    snapshot = await service.create_snapshot_session(ALICE, SnapshotSessionCreateRequest())
    assert snapshot.row_count == 1
    page = await service.snapshot_chunk(ALICE, snapshot.snapshot_id)
    assert [r.key for r in page.rows] == [{"id": key}]
    await service.delete_snapshot_session(ALICE, snapshot.snapshot_id)

    # A committed session is gone; the replayed create answers already_committed.
    with pytest.raises(PushSessionNotFoundError):
        await service.commit_push_session(ALICE, created.push_id)
    replay = await service.create_push_session(
        ALICE, PushSessionCreateRequest(source_bundle_id=1, planned_row_count=1)
    )
    assert replay.status == "already_committed"
    assert replay.bundle_hash == committed.bundle_hash

    caps = await service.capabilities(ALICE)
    assert caps.features.connect_lifecycle is True
    status = await service.status()
    assert status.latest_bundle_seq_max == 1
    _, code = await service.health()
    assert code == 200


async def test_server_originated_writes_and_prune(pg_engine: AsyncEngine) -> None:
    service = await _service(pg_engine, retained_bundles_per_user=1)
    key = uuid.uuid4()

    async def insert(writer: BundleWriter) -> None:
        await writer.connection.execute(
            sa.text("INSERT INTO business.users (id, name, email) VALUES (:id, 'srv', 's@x')"),
            {"id": key},
        )

    result = await service.scope_manager().exec_write("bob", insert, writer_id="backend")
    assert result.auto_initialized is True
    assert result.bundle.bundle_seq == 1

    async def rename(writer: BundleWriter) -> None:
        await writer.connection.execute(
            sa.text(
                "UPDATE business.users SET name = 'srv2'"
                " WHERE id = :id AND _sync_scope_id = :scope"
            ),
            {"id": key, "scope": writer.user_id},
        )

    bundle = await service.within_sync_bundle("bob", BundleSource("backend", 2), rename)
    assert bundle is not None
    assert bundle.bundle_seq == 2
    # The commit itself already pruned to the one-bundle window, so a maintenance run after
    # it has nothing left to do.
    async with pg_engine.connect() as conn:
        floor = await conn.scalar(
            sa.text("SELECT retained_bundle_floor FROM sync.user_state WHERE user_id = 'bob'")
        )
    assert floor == 1
    progress = await service.prune()
    assert (progress.floors_advanced, progress.bundles_deleted) == (0, 0)


async def test_watch_wakes_a_subscriber_and_close_drains(pg_engine: AsyncEngine) -> None:
    service = await _service(
        pg_engine, bundle_change_watch=BundleChangeWatchConfig(enabled=True)
    )
    await service.start_watch()
    await service.connect(ALICE, ConnectRequest(has_local_pending_rows=False))
    subscription = await service.watch(ALICE, 0)

    async def insert(writer: BundleWriter) -> None:
        await writer.connection.execute(
            sa.text("INSERT INTO business.users (id, name, email) VALUES (:id, 'w', 'w@x')"),
            {"id": uuid.uuid4()},
        )

    await service.scope_manager().exec_write("alice", insert, writer_id="backend")
    event = await asyncio.wait_for(subscription.receive(), timeout=10)
    assert event is not None
    assert event.bundle_seq == 1

    await service.close()
    assert await subscription.receive() is None
    with pytest.raises(ServiceClosedError):
        await service.pull(ALICE)


async def test_shutting_down_rejects_new_work_with_503(pg_engine: AsyncEngine) -> None:
    service = await _service(pg_engine)
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(writer: BundleWriter) -> None:
        await writer.connection.execute(
            sa.text("INSERT INTO business.users (id, name, email) VALUES (:id, 's', 's@x')"),
            {"id": uuid.uuid4()},
        )
        started.set()
        await release.wait()

    write = asyncio.create_task(
        service.scope_manager().exec_write("carol", slow, writer_id="backend")
    )
    await started.wait()
    assert service.in_flight == 1
    closing = asyncio.create_task(service.close())
    await asyncio.sleep(0.05)
    with pytest.raises(ServiceUnavailableError):
        await service.pull(ALICE)
    release.set()
    await write
    await closing
