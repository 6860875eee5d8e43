"""Lifecycle behaviours pinned by go-oversync's ``oversqlite/lifecycle_test.go`` and
``client_test.go`` that had no counterpart here (named after the Go test in each docstring)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy.exc import DBAPIError

from oversync_sa.client import RetryPolicy
from oversync_sa.client.client import SyncClient
from oversync_sa.client.errors import (
    AttachLocalStateConflictError,
    ClientClosedError,
    RetryExhaustedError,
)
from oversync_sa.client.results import AttachOutcome, DetachOutcome
from oversync_sa.client.triggers import TRANSITION_PENDING_MESSAGE
from oversync_sa.errors import OversyncError
from tests.client.lifecycle.fakes import (
    CAPS,
    CONFIG,
    FakeServer,
    make_client,
    ok,
    scalar,
    snapshot_routes,
    user_row,
)

NO_RETRY = RetryPolicy(enabled=False)


async def write(client: SyncClient, sql: str) -> None:
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql(sql)


async def attach_empty(client: SyncClient, server: FakeServer, user: str = "u1") -> None:
    server.default("GET /api/sync/capabilities", CAPS)
    server.queue("POST /api/sync/connect", ok({"resolution": "initialize_empty"}))
    await client.open()
    await client.attach(user)


async def freeze_with_failed_create(client: SyncClient, server: FakeServer) -> None:
    """Leave one ``prepared`` outbox behind: the push-session create keeps failing."""
    await write(client, "INSERT INTO users VALUES ('a', 'Ann')")
    server.default("POST /api/sync/push-sessions", httpx.Response(503))
    with pytest.raises(RetryExhaustedError):
        await client.push_pending()
    assert await scalar(client, "SELECT state FROM _sync_outbox_bundle") == "prepared"
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_dirty_rows") == 0


async def test_initialize_preserves_unknown_sync_prefixed_tables(
    tmp_path: Path, server: FakeServer
) -> None:
    """TestInitializeDatabase_PreservesUnknownSyncPrefixedTables."""
    import sqlite3

    path = tmp_path / "own.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE _sync_app_notes (note TEXT)")
        raw.execute("INSERT INTO _sync_app_notes VALUES ('keep me')")
    first = await make_client(path, server)
    await first.open()
    await first.close()
    await first.runtime.engine.dispose()
    again = await make_client(path, server)
    try:
        await again.open()
        assert await scalar(again, "SELECT note FROM _sync_app_notes") == "keep me"
    finally:
        await again.close()
        await again.runtime.engine.dispose()


async def test_open_is_idempotent_for_the_managed_source(
    client: SyncClient, server: FakeServer
) -> None:
    """TestOpen_IsIdempotentForMatchingSource."""
    await write(client, "INSERT INTO users VALUES ('pre', 'Existing')")
    await client.open()
    source = (await client.source_info()).current_source_id
    dirty = await scalar(client, "SELECT COUNT(*) FROM _sync_dirty_rows")

    await client.open()

    assert (await client.source_info()).current_source_id == source
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_source_state") == 1
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_dirty_rows") == dirty == 1
    assert server.requests == []


@pytest.mark.parametrize("outbox", ["prepared", "committed_remote"])
async def test_detach_blocks_while_a_frozen_outbox_exists(
    client: SyncClient, server: FakeServer, outbox: str
) -> None:
    """TestDetach_BlocksWhenPreparedOutboxExists / ...CommittedRemoteOutboxExists."""
    await attach_empty(client, server)
    await freeze_with_failed_create(client, server)
    if outbox == "committed_remote":
        await write(client, "UPDATE _sync_outbox_bundle SET state = 'committed_remote',"
                            " remote_bundle_seq = 1, remote_bundle_hash = 'h'")

    result = await client.detach()

    assert result.outcome is DetachOutcome.BLOCKED_UNSYNCED_DATA
    assert result.pending_row_count == 1
    assert await scalar(client, "SELECT binding_state FROM _sync_attachment_state") == "attached"
    assert await scalar(client, "SELECT COUNT(*) FROM users") == 1
    assert await scalar(client, "SELECT state FROM _sync_outbox_bundle") == outbox


async def test_detach_reenables_capture_for_anonymous_writes(
    client: SyncClient, server: FakeServer
) -> None:
    """TestDetach_ReenablesDirtyRowCaptureForAnonymousWrites (and no duplicate on reopen)."""
    await attach_empty(client, server)
    assert (await client.detach()).outcome is DetachOutcome.DETACHED

    await write(client, "INSERT INTO users VALUES ('anon', 'Offline')")

    assert await scalar(client, "SELECT key_json || op FROM _sync_dirty_rows") == (
        '{"id":"anon"}INSERT'
    )
    # TestDetach_ReopenDoesNotDuplicateAnonymousWrites: Open's capture of existing rows must
    # not add a second intent for a row that is already dirty.
    await client.open()
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_dirty_rows") == 1
    assert (await client.pending_sync_status()).pending_row_count == 1
    assert not (await client.pending_sync_status()).blocks_detach


@pytest.mark.parametrize("outbox", ["prepared", "committed_remote"])
async def test_source_info_reports_pending_outbox_without_changing_it(
    client: SyncClient, server: FakeServer, outbox: str
) -> None:
    """TestSourceInfo_ReportsManagedSourceWithCommittedRemoteOutbox / PreservesPendingLocalState."""
    await attach_empty(client, server)
    await freeze_with_failed_create(client, server)
    await write(client, f"UPDATE _sync_outbox_bundle SET state = '{outbox}'")
    await write(client, "INSERT INTO users VALUES ('b', 'Later')")
    source = client.runtime.source_id
    before = len(server.requests)

    info = await client.source_info()

    assert info.current_source_id == source
    assert not info.rebuild_required
    assert not info.source_recovery_required
    assert info.source_recovery_reason is None
    assert len(server.requests) == before
    assert await scalar(client, "SELECT state FROM _sync_outbox_bundle") == outbox
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_dirty_rows") == 1
    assert (await client.pending_sync_status()).pending_row_count == 2


async def test_uninstall_then_a_fresh_install_on_the_same_database(
    tmp_path: Path, server: FakeServer
) -> None:
    """TestUninstallSync_AllowsFreshReinstallOnSameDatabase."""
    path = tmp_path / "re.db"
    first = await make_client(path, server)
    await first.open()
    old_source = (await first.source_info()).current_source_id
    await write(first, "INSERT INTO users VALUES ('kept', 'Business row')")
    await first.uninstall_sync()
    with pytest.raises(ClientClosedError):
        await first.source_info()
    await first.runtime.engine.dispose()

    second = await make_client(path, server)
    try:
        await second.open()
        info = await second.source_info()
        assert info.current_source_id
        assert info.current_source_id != old_source
        assert await scalar(second, "SELECT name FROM users WHERE id = 'kept'") == "Business row"
        # The reinstalled triggers capture again: the kept row (Open) and a new write.
        await write(second, "INSERT INTO users VALUES ('new', 'Captured')")
        assert await scalar(second, "SELECT COUNT(*) FROM _sync_dirty_rows") == 2
    finally:
        await second.close()
        await second.runtime.engine.dispose()


@pytest.mark.parametrize(
    ("reply", "attempts"),
    [(httpx.Response(401, json={"error": "unauthorized", "message": "no"}), 1),
     (httpx.Response(503), 3)],
)
async def test_connect_retry_policy(
    tmp_path: Path, server: FakeServer, reply: httpx.Response, attempts: int
) -> None:
    """TestConnect_DoesNotRetryUnauthorized / TestConnect_RetryExhaustionReturnsTypedError."""
    client = await make_client(tmp_path / "r.db", server)
    try:
        server.default("GET /api/sync/capabilities", CAPS)
        server.default("POST /api/sync/connect", reply)
        await client.open()
        with pytest.raises(OversyncError) as caught:
            await client.attach("u1")
        if attempts > 1:
            assert isinstance(caught.value, RetryExhaustedError)
        else:
            assert not isinstance(caught.value, RetryExhaustedError)
        assert server.count("POST /api/sync/connect") == attempts
        assert await scalar(client, "SELECT binding_state FROM _sync_attachment_state") == (
            "anonymous"
        )
    finally:
        await client.close()
        await client.runtime.engine.dispose()


async def test_connect_with_retries_disabled_is_one_attempt(
    tmp_path: Path, server: FakeServer
) -> None:
    """TestConnect_RetryPolicyCanBeDisabledExplicitly."""
    from dataclasses import replace

    client = await make_client(tmp_path / "n.db", server, replace(CONFIG, retry_policy=NO_RETRY))
    try:
        server.default("GET /api/sync/capabilities", CAPS)
        server.default("POST /api/sync/connect", httpx.Response(503))
        await client.open()
        with pytest.raises(RetryExhaustedError):
            await client.attach("u1")
        assert server.count("POST /api/sync/connect") == 1
    finally:
        await client.close()
        await client.runtime.engine.dispose()


async def test_attach_persists_the_configured_schema(
    client: SyncClient, server: FakeServer
) -> None:
    """TestConnect_PersistsConfiguredSchemaIdentity."""
    await attach_empty(client, server)
    assert await scalar(client, "SELECT schema_name FROM _sync_attachment_state") == "business"


async def _register_legacy_table(client: SyncClient) -> None:
    """A table an older configuration managed: registered, holding a row, no longer configured."""
    await write(client, "CREATE TABLE legacy (id TEXT PRIMARY KEY NOT NULL, note TEXT)")
    await write(client, "INSERT INTO legacy VALUES ('old', 'from an older app version')")
    await write(client, "INSERT INTO _sync_managed_tables VALUES ('business', 'legacy')")


async def test_detach_clears_historically_managed_tables(
    client: SyncClient, server: FakeServer
) -> None:
    """TestDetach_ClearsHistoricallyManagedTablesRemovedFromCurrentConfig."""
    await attach_empty(client, server)
    await _register_legacy_table(client)
    await write(client, "INSERT INTO users VALUES ('a', 'Ann')")
    await write(client, "DELETE FROM _sync_dirty_rows")  # as if pushed

    assert (await client.detach()).outcome is DetachOutcome.DETACHED

    assert await scalar(client, "SELECT COUNT(*) FROM legacy") == 0
    assert await scalar(client, "SELECT COUNT(*) FROM users") == 0


async def _pending_remote_replace(client: SyncClient, **staged: object) -> None:
    columns = "".join(f", {name} = {value!r}" for name, value in staged.items())
    await write(client, "UPDATE _sync_operation_state SET kind = 'remote_replace',"
                        f" target_user_id = 'u1'{columns}")


async def test_open_allows_a_pending_remote_replace_and_guards_writes(
    client: SyncClient, server: FakeServer
) -> None:
    """TestOpen_AllowsPendingRemoteReplaceRecoveryState."""
    await client.open()
    await _pending_remote_replace(client)
    await client.close()
    await client.runtime.engine.dispose()
    again = await make_client(Path(str(client.runtime.engine.url.database)), server)
    try:
        await again.open()
        assert await scalar(again, "SELECT kind FROM _sync_operation_state") == "remote_replace"
        with pytest.raises(DBAPIError, match=TRANSITION_PENDING_MESSAGE):
            await write(again, "INSERT INTO users VALUES ('x', 'Blocked')")
    finally:
        await again.close()
        await again.runtime.engine.dispose()


async def test_pending_remote_replace_for_another_scope_fails_closed(
    client: SyncClient, server: FakeServer
) -> None:
    """TestConnect_PendingRemoteReplaceMismatchedScopeFailsClosed."""
    await client.open()
    await _pending_remote_replace(client)

    with pytest.raises(AttachLocalStateConflictError, match="u1"):
        await client.attach("u2")

    assert server.requests == []
    assert await scalar(client, "SELECT kind FROM _sync_operation_state") == "remote_replace"


async def test_pending_remote_replace_finishes_from_the_stage_without_network(
    client: SyncClient, server: FakeServer
) -> None:
    """TestConnect_PendingRemoteReplaceFinalizesFromStagedSnapshotWithoutNetwork."""
    await client.open()
    await _pending_remote_replace(client, staged_snapshot_id="snap-9", snapshot_bundle_seq=7,
                                  snapshot_row_count=2)
    for ordinal, key in enumerate(("a", "b"), start=1):
        await write(
            client,
            "INSERT INTO _sync_snapshot_stage (snapshot_id, row_ordinal, schema_name, table_name,"
            f" key_json, row_version, payload) VALUES ('snap-9', {ordinal}, 'business', 'users',"
            f" '{{\"id\":\"{key}\"}}', 7, '{{\"id\":\"{key}\",\"name\":\"N{key}\"}}')",
        )

    result = await client.attach("u1")

    assert result.outcome is AttachOutcome.USED_REMOTE_STATE
    assert server.requests == []
    assert await scalar(client, "SELECT group_concat(id || name) FROM (SELECT * FROM users"
                                " ORDER BY id)") == "aNa,bNb"
    assert await client.last_bundle_seq_seen() == 7
    assert await scalar(client, "SELECT kind FROM _sync_operation_state") == "none"
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_snapshot_stage") == 0


async def test_detach_cancels_a_pending_remote_replace(
    client: SyncClient, server: FakeServer
) -> None:
    """TestDetach_CancelsPendingRemoteReplace: another user can then attach."""
    await client.open()
    await _pending_remote_replace(client)

    assert (await client.detach()).outcome is DetachOutcome.DETACHED

    assert await scalar(client, "SELECT kind FROM _sync_operation_state") == "none"
    await write(client, "INSERT INTO users VALUES ('x', 'Writable again')")
    server.default("GET /api/sync/capabilities", CAPS)
    server.queue("POST /api/sync/connect", ok({"resolution": "initialize_local",
                                                "initialization_id": "i-2"}))
    result = await client.attach("u2")
    assert result.outcome is AttachOutcome.SEEDED_FROM_LOCAL


async def test_remote_authoritative_attach_clears_historically_managed_tables(
    client: SyncClient, server: FakeServer
) -> None:
    """TestConnect_RemoteAuthoritativeReplaceClearsHistoricallyManagedTablesRemovedFromConfig."""
    await client.open()
    await _register_legacy_table(client)
    server.default("GET /api/sync/capabilities", CAPS)
    server.queue("POST /api/sync/connect", ok({"resolution": "remote_authoritative"}))
    snapshot_routes(server, [user_row("r", "Remote", 3)], seq=3)

    result = await client.attach("u1")

    assert result.outcome is AttachOutcome.USED_REMOTE_STATE
    assert await scalar(client, "SELECT COUNT(*) FROM legacy") == 0
    assert await scalar(client, "SELECT group_concat(id) FROM users") == "r"


async def test_connect_retries_a_transient_failure_and_attaches(
    client: SyncClient, server: FakeServer
) -> None:
    """TestConnect_RetriesTransientHTTPFailureAndSucceeds."""
    server.default("GET /api/sync/capabilities", CAPS)
    server.queue("POST /api/sync/connect", httpx.Response(503),
                 ok({"resolution": "initialize_empty"}))
    await client.open()

    result = await client.attach("u1")

    assert result.outcome is AttachOutcome.STARTED_EMPTY
    assert server.count("POST /api/sync/connect") == 2
    assert await scalar(client, "SELECT attached_user_id FROM _sync_attachment_state") == "u1"
