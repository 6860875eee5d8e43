"""Client construction, Open and runtime-identity behaviours pinned by go-oversync's
``oversqlite/client_test.go`` and ``custom_pk_test.go`` that had no counterpart here (each
docstring names the Go test it ports)."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from oversync_sa.client import ClientConfig, LoopPhase, SyncTable
from oversync_sa.client.client import SyncClient
from oversync_sa.client.errors import (
    AttachRequiredError,
    LifecyclePreconditionError,
    SyncOperationInProgressError,
)
from oversync_sa.client.results import AttachOutcome, AttachStatus, DetachOutcome
from oversync_sa.errors import UnsupportedSchemaError
from tests.client.lifecycle.fakes import (
    CONFIG,
    FakeServer,
    attached,
    closing,
    connect_reply,
    dispose,
    error,
    formerly_managed_table,
    make_client,
    scalar,
    write,
)


async def test_new_client_has_no_identity_until_open(tmp_path: Path) -> None:
    """TestNewClient: construction alone neither picks a source, binds a user, asks for a
    token nor touches the network."""
    server = FakeServer()
    tokens: list[str] = []

    def token() -> str:
        tokens.append("asked")
        return "tok"

    with sqlite3.connect(tmp_path / "n.db"):
        pass
    client = await SyncClient.create(
        tmp_path / "n.db", "http://sync.test/api/", token, ClientConfig("business", ()),
        http_transport=server.transport,
    )
    async with closing(client):
        assert client.runtime.source_id == ""
        assert client.runtime.user_id == ""
        assert not client.runtime.session_connected
        assert await scalar(client, "SELECT COUNT(*) FROM _sync_source_state") == 0
        assert tokens == []
        assert server.requests == []


async def test_open_persists_the_source_with_a_fresh_bundle_counter(
    client: SyncClient, server: FakeServer
) -> None:
    """TestOpen_PersistsManagedSourceState."""
    await client.open()

    source = client.runtime.source_id
    assert source
    assert await scalar(client, "SELECT current_source_id FROM _sync_attachment_state") == source
    async with client.runtime.engine.connect() as conn:
        stored = [
            tuple(r)
            for r in await conn.exec_driver_sql(
                "SELECT source_id, next_source_bundle_id FROM _sync_source_state"
            )
        ]
    assert stored == [(source, 1)]
    assert server.requests == []


async def test_open_then_attach_establish_source_then_user(
    client: SyncClient, server: FakeServer
) -> None:
    """TestOpenAndAttachEstablishRuntimeIdentity: Open picks the source, Attach binds the user
    and keeps that source."""
    await client.open()
    source = client.runtime.source_id
    assert source
    assert client.runtime.user_id == ""

    connect_reply(server)
    result = await client.attach("u1")

    assert result.status is AttachStatus.CONNECTED
    assert client.runtime.user_id == "u1"
    assert client.runtime.source_id == source
    connect = server.requests[-1]
    assert connect.headers["oversync-source-id"] == source


async def test_push_after_open_without_attach_is_refused_offline(
    client: SyncClient, server: FakeServer
) -> None:
    """TestOperationsRequireAttachAfterOpen (PushPending; the other operations are covered in
    lifecycle/test_attach.py and facade/test_facade.py): nothing is frozen or sent."""
    await write(client, "INSERT INTO users VALUES ('a', 'Ann')")
    await client.open()

    with pytest.raises(AttachRequiredError) as caught:
        await client.push_pending()

    assert isinstance(caught.value, LifecyclePreconditionError)
    assert server.requests == []
    assert await scalar(client, "SELECT state FROM _sync_outbox_bundle") == "none"
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_dirty_rows") == 1


async def test_restart_keeps_rows_outbox_stages_and_source(
    tmp_path: Path, server: FakeServer
) -> None:
    """TestOpen_PreservesLocalRowsAndManagedSourceAcrossRestart: a restart followed by the
    offline resume must not discard or rewrite any durable sync state."""
    path = tmp_path / "restart.db"
    first = await make_client(path, server)
    await attached(first, server)
    source = first.runtime.source_id
    await write(first, "INSERT INTO users VALUES ('stale', 'Stale')")
    await write(
        first,
        "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version, deleted)"
        " VALUES ('business', 'users', '{\"id\":\"stale\"}', 7, 0)",
    )
    await write(
        first,
        "UPDATE _sync_outbox_bundle SET state = 'prepared', source_id = ?, source_bundle_id = 5,"
        " row_count = 1, canonical_request_hash = 'hash'",
        (source,),
    )
    await write(
        first,
        "INSERT INTO _sync_outbox_rows (source_bundle_id, row_ordinal, schema_name, table_name,"
        " key_json, wire_key_json, op, base_row_version, local_payload, wire_payload) VALUES"
        " (5, 0, 'business', 'users', '{\"id\":\"stale\"}', '{\"id\":\"stale\"}', 'UPDATE', 7,"
        " '{\"id\":\"stale\",\"name\":\"Stale\"}', '{\"id\":\"stale\",\"name\":\"Stale\"}')",
    )
    await write(
        first,
        "INSERT INTO _sync_push_stage (bundle_seq, row_ordinal, schema_name, table_name,"
        " key_json, op, row_version, payload) VALUES (9, 0, 'business', 'users',"
        " '{\"id\":\"stale\"}', 'UPDATE', 8, '{\"id\":\"stale\",\"name\":\"Stage\"}')",
    )
    await write(
        first,
        "INSERT INTO _sync_snapshot_stage (snapshot_id, row_ordinal, schema_name, table_name,"
        " key_json, row_version, payload) VALUES ('snapshot-stale', 1, 'business', 'users',"
        " '{\"id\":\"stale\"}', 8, '{\"id\":\"stale\",\"name\":\"Snapshot\"}')",
    )
    await write(first, "UPDATE _sync_source_state SET next_source_bundle_id = 5")
    await write(first, "UPDATE _sync_attachment_state SET last_bundle_seq_seen = 4")
    await formerly_managed_table(first)
    await dispose(first)
    requests = len(server.requests)

    async with closing(await make_client(path, server)) as again:
        await again.open()
        result = await again.attach("u1")

        assert result.outcome is AttachOutcome.RESUMED_ATTACHED_STATE
        assert len(server.requests) == requests
        info = await again.source_info()
        assert info.current_source_id == again.runtime.source_id == source
        assert not info.rebuild_required
        assert not info.source_recovery_required
        counts = {
            table: await scalar(again, f"SELECT COUNT(*) FROM {table} WHERE {where}")
            for table, where in (
                ("users", "1"), ("_sync_dirty_rows", "1"),
                ("_sync_row_state", "table_name = 'users'"), ("_sync_outbox_rows", "1"),
                ("_sync_push_stage", "1"), ("_sync_snapshot_stage", "1"),
            )
        }
        assert counts == dict.fromkeys(counts, 1)
        assert await scalar(again, "SELECT state FROM _sync_outbox_bundle") == "prepared"
        assert await scalar(again, "SELECT next_source_bundle_id FROM _sync_source_state") == 5
        assert await again.last_bundle_seq_seen() == 4
        # Differs by design from Go, which also keeps the unconfigured table's row state: a
        # table outside the configuration is retired (oversync_sa.client.table_set), so its
        # rows stay as local data but its replicated row state is forgotten.
        assert await scalar(again, "SELECT COUNT(*) FROM legacy") == 1
        assert await scalar(
            again, "SELECT COUNT(*) FROM _sync_row_state WHERE table_name = 'legacy'"
        ) == 0


async def test_detach_forgets_row_state_of_historically_managed_tables(
    client: SyncClient, server: FakeServer
) -> None:
    """TestDetach_ClearsHistoricallyManagedTablesRemovedFromCurrentConfig: besides the rows
    (asserted in test_go_parity_lifecycle), the table's row state must go too."""
    await attached(client, server)
    await formerly_managed_table(client)

    assert (await client.detach()).outcome is DetachOutcome.DETACHED

    assert await scalar(client, "SELECT COUNT(*) FROM legacy") == 0
    assert await scalar(
        client, "SELECT COUNT(*) FROM _sync_row_state WHERE table_name = 'legacy'"
    ) == 0


async def test_create_refuses_sync_state_of_another_schema(tmp_path: Path) -> None:
    """TestNewClient_FailsWhenExistingSyncStateUsesDifferentSchema: the attachment alone
    (no row state yet) already binds the database to its schema."""
    server = FakeServer()
    path = tmp_path / "other.db"
    first = await make_client(path, server, replace(CONFIG, schema="other_business"))
    await first.open()
    await dispose(first)

    with pytest.raises(UnsupportedSchemaError, match="other_business"):
        await make_client(path, server)


async def test_bigint_sync_key_is_rejected_at_create(tmp_path: Path) -> None:
    """TestNewClient_RejectsInvalidSyncKeyColumnDefinitions ("bigint primary key"): an
    INTEGER-affinity key is refused whatever its spelling."""
    path = tmp_path / "big.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE counters (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
    config = ClientConfig("business", (SyncTable("counters", "id"),))

    with pytest.raises(
        UnsupportedSchemaError, match="supports only TEXT keys and UUID-backed BLOB keys"
    ):
        await SyncClient.create(path, "http://sync.test/api/", lambda: "tok", config)


async def test_lifecycle_errors_reset_the_loop_backoff(tmp_path: Path) -> None:
    """TestLifecyclePreconditionErrorsResetSyncLoopBackoff: after failures grew the download
    backoff, a lifecycle precondition (here: detached) puts it back to backoff_min."""
    server = FakeServer()
    config = replace(CONFIG, backoff_min=0.01, backoff_max=0.08)
    client = await make_client(tmp_path / "b.db", server, config)
    try:
        await attached(client, server)
        server.default("GET /api/sync/pull", error(500, "pull_failed"))
        client.pause_uploads()
        await client.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while client.background_status.download.backoff < 0.08:
            assert loop.time() < deadline, "download backoff never grew"
            await asyncio.sleep(0.005)

        while True:
            try:
                assert (await client.detach()).outcome is DetachOutcome.DETACHED
                break
            except SyncOperationInProgressError:
                await asyncio.sleep(0.001)
        while client.background_status.download.phase is not LoopPhase.BLOCKED:
            assert loop.time() < deadline, "download loop never reported the lifecycle block"
            await asyncio.sleep(0.005)

        assert client.background_status.download.backoff == 0.01
    finally:
        await client.stop()
        await dispose(client)
