"""Lifecycle and result-contract behaviours pinned by go-oversync's
``oversqlite/lifecycle_test.go`` and ``result_contract_test.go`` that had no counterpart here
(each docstring names the Go test it ports)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from oversync_sa.client import trigger_names
from oversync_sa.client.client import SyncClient
from oversync_sa.client.errors import (
    AttachRequiredError,
    ClientClosedError,
    OpenRequiredError,
)
from oversync_sa.client.local_schema import METADATA_TABLES
from oversync_sa.client.results import (
    AttachOutcome,
    AuthorityStatus,
    DetachOutcome,
    RemoteSyncOutcome,
    SourceRecoveryCode,
)
from oversync_sa.errors import InitializationExpiredError, InitializationStaleError
from tests.client.lifecycle.fakes import (
    CAPS,
    FakeServer,
    attached,
    body_of,
    closing,
    connect_reply,
    dispose,
    error,
    formerly_managed_table,
    make_client,
    ok,
    scalar,
    snapshot_routes,
    user_row,
    write,
)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (error(410, "initialization_expired", "seed lease is no longer valid"),
         InitializationExpiredError),
        (error(409, "initialization_stale", "seed lease is no longer valid"),
         InitializationStaleError),
    ],
    ids=["expired", "stale"],
)
async def test_lost_seed_lease_then_reattach_issues_a_new_connect(
    client: SyncClient, server: FakeServer, reply: httpx.Response, expected: type[Exception]
) -> None:
    """TestConnect_ReconnectAfterInitializationExpiredClearsStalePendingInitializationAndReissuesConnect
    and ...InitializationStale...: the lost lease is forgotten, and the next Attach of the same
    user goes back to the server for a new one instead of resuming offline."""
    await write(client, "INSERT INTO users VALUES ('seed-1', 'Seed')")
    await client.open()
    server.default("GET /api/sync/capabilities", CAPS)
    server.queue(
        "POST /api/sync/connect",
        ok({"resolution": "initialize_local", "initialization_id": "init-1"}),
        ok({"resolution": "initialize_local", "initialization_id": "init-2"}),
    )
    assert (await client.attach("u1")).outcome is AttachOutcome.SEEDED_FROM_LOCAL
    assert await scalar(client, "SELECT pending_initialization_id FROM _sync_attachment_state") \
        == "init-1"
    server.queue("POST /api/sync/push-sessions", reply)

    with pytest.raises(expected):
        await client.push_pending()

    assert client.runtime.user_id == ""
    assert client.runtime.pending_initialization_id == ""
    assert await scalar(client, "SELECT binding_state || '|' || pending_initialization_id"
                                " FROM _sync_attachment_state") == "anonymous|"

    again = await client.attach("u1")

    assert again.outcome is AttachOutcome.SEEDED_FROM_LOCAL
    assert server.count("POST /api/sync/connect") == 2
    assert body_of(server.requests[-1]) == {"has_local_pending_rows": True}
    assert client.runtime.user_id == "u1"
    assert client.runtime.pending_initialization_id == "init-2"
    assert await scalar(client, "SELECT pending_initialization_id FROM _sync_attachment_state") \
        == "init-2"


async def test_open_capture_of_existing_rows_is_pending_but_does_not_block_detach(
    client: SyncClient,
) -> None:
    """TestOpen_CapturesAnonymousPreexistingRowsWithoutBlockingDetach."""
    await write(client, "INSERT INTO users VALUES ('1', 'Ada')")

    await client.open()

    status = await client.pending_sync_status()
    assert status.has_pending_sync_data
    assert status.pending_row_count == 1
    assert not status.blocks_detach


async def test_uninstall_removes_metadata_and_triggers_but_keeps_business_rows(
    client: SyncClient, server: FakeServer
) -> None:
    """TestUninstallSync_RemovesMetadataAndTriggersButPreservesBusinessTables: a write after
    the uninstall must work (a leftover trigger would fail on the dropped metadata tables)."""
    await attached(client, server)
    await write(client, "INSERT INTO users VALUES ('1', 'Ada')")

    await client.uninstall_sync()

    async with client.runtime.engine.connect() as conn:
        names = {
            str(r[0]) for r in await conn.exec_driver_sql("SELECT name FROM sqlite_master")
        }
    assert names.isdisjoint(METADATA_TABLES)
    assert names.isdisjoint(trigger_names("users") + trigger_names("posts"))
    await write(client, "INSERT INTO users VALUES ('2', 'Grace')")
    assert await scalar(client, "SELECT COUNT(*) FROM users") == 2
    with pytest.raises(ClientClosedError):
        await client.open()


async def test_open_restores_the_attached_user_but_not_the_session(
    tmp_path: Path, server: FakeServer
) -> None:
    """TestResultContract_Open ("restores durable attached local state"): Open alone knows the
    attached user again, yet sync operations still need Attach (an offline resume)."""
    path = tmp_path / "restart.db"
    first = await make_client(path, server)
    await attached(first, server, "result-user")
    await dispose(first)

    async with closing(await make_client(path, server)) as again:
        await again.open()
        assert again.runtime.user_id == "result-user"
        with pytest.raises(AttachRequiredError):
            await again.sync_status()


async def test_sync_status_preconditions_then_connected_shape(
    client: SyncClient, server: FakeServer
) -> None:
    """TestResultContract_AttachAndSyncStatus ("sync status preconditions and connected
    state")."""
    with pytest.raises(OpenRequiredError):
        await client.sync_status()
    await client.open()
    with pytest.raises(AttachRequiredError):
        await client.sync_status()
    connect_reply(server)
    await client.attach("result-user")
    await write(client, "INSERT INTO users VALUES ('user-1', 'Ada')")

    status = await client.sync_status()

    assert status.authority is AuthorityStatus.AUTHORITATIVE_EMPTY
    assert status.pending.has_pending_sync_data
    assert status.pending.pending_row_count == 1
    assert status.pending.blocks_detach
    assert status.last_bundle_seq_seen == 0


async def test_paused_pull_reports_skipped_without_a_request(
    client: SyncClient, server: FakeServer
) -> None:
    """TestResultContract_RemoteSyncAndRotationOutcomes ("pull skipped paused")."""
    await attached(client, server)
    sent = len(server.requests)
    client.pause_downloads()

    report = await client.pull_to_stable()

    assert report.outcome is RemoteSyncOutcome.SKIPPED_PAUSED
    assert len(server.requests) == sent


async def test_source_info_reports_rebuild_and_recovery_flags(
    client: SyncClient, server: FakeServer
) -> None:
    """TestResultContract_SourceInfo: the diagnostic flags follow the durable state."""
    await attached(client, server)
    info = await client.source_info()
    assert (info.rebuild_required, info.source_recovery_required) == (False, False)
    assert info.source_recovery_reason is None

    await write(client, "UPDATE _sync_attachment_state SET rebuild_required = 1")
    await write(client, "UPDATE _sync_operation_state SET kind = 'source_recovery',"
                        " reason = 'source_sequence_changed'")

    info = await client.source_info()
    assert info.current_source_id == client.runtime.source_id
    assert info.rebuild_required
    assert info.source_recovery_required
    assert info.source_recovery_reason is SourceRecoveryCode.SOURCE_SEQUENCE_CHANGED


async def test_remote_authoritative_attach_reports_restore_and_materialized_authority(
    client: SyncClient, server: FakeServer
) -> None:
    """TestResultContract_AttachAndSyncStatus ("restore result shape")."""
    await client.open()
    connect_reply(server, "remote_authoritative")
    snapshot_routes(server, [user_row("remote-1", "Remote", 9)], seq=9)

    result = await client.attach("result-user")

    assert result.outcome is AttachOutcome.USED_REMOTE_STATE
    assert result.restore is not None
    assert (result.restore.bundle_seq, result.restore.row_count) == (9, 1)
    assert result.sync_status is not None
    assert result.sync_status.authority is AuthorityStatus.AUTHORITATIVE_MATERIALIZED
    assert await scalar(client, "SELECT COUNT(*) FROM users WHERE id = 'remote-1'") == 1


async def test_remote_replace_forgets_row_state_of_historically_managed_tables(
    client: SyncClient, server: FakeServer
) -> None:
    """TestConnect_RemoteAuthoritativeReplaceClearsHistoricallyManagedTablesRemovedFromConfig:
    the row-state half (the rows are asserted in test_go_parity_lifecycle)."""
    await client.open()
    await formerly_managed_table(client)
    connect_reply(server, "remote_authoritative")
    snapshot_routes(server, [user_row("remote-1", "Remote", 7)], seq=7)

    assert (await client.attach("u1")).outcome is AttachOutcome.USED_REMOTE_STATE

    assert await scalar(client, "SELECT COUNT(*) FROM legacy") == 0
    assert await scalar(
        client, "SELECT COUNT(*) FROM _sync_row_state WHERE table_name = 'legacy'"
    ) == 0


async def test_detach_discards_the_staged_snapshot_of_a_pending_replace(
    client: SyncClient,
) -> None:
    """TestDetach_CancelsPendingRemoteReplace: the half-downloaded stage goes with the
    cancelled replace (the state reset is asserted in test_go_parity_lifecycle)."""
    await client.open()
    await write(client, "UPDATE _sync_operation_state SET kind = 'remote_replace',"
                        " target_user_id = 'u1', staged_snapshot_id = 'snapshot-1',"
                        " snapshot_bundle_seq = 11, snapshot_row_count = 1")
    await write(client, "INSERT INTO _sync_snapshot_stage (snapshot_id, row_ordinal,"
                        " schema_name, table_name, key_json, row_version, payload) VALUES"
                        " ('snapshot-1', 1, 'business', 'users', '{\"id\":\"remote-1\"}', 4,"
                        " '{\"id\":\"remote-1\",\"name\":\"Remote\"}')")

    assert (await client.detach()).outcome is DetachOutcome.DETACHED

    state = "SELECT binding_state || '|' || kind FROM _sync_attachment_state, _sync_operation_state"
    assert await scalar(client, state) == "anonymous|none"
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_snapshot_stage") == 0
