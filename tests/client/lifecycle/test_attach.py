"""Open/attach/detach lifecycle against a scripted server."""

from __future__ import annotations

from pathlib import Path

import pytest

from oversync_sa.client.client import SyncClient
from oversync_sa.client.errors import (
    AttachBindingConflictError,
    AttachLifecycleUnsupportedError,
    AttachRequiredError,
    DatabaseAlreadyOwnedError,
    OpenRequiredError,
    RetryExhaustedError,
)
from oversync_sa.client.results import AttachOutcome, AttachStatus, DetachOutcome
from tests.client.lifecycle.fakes import (
    CAPS,
    FakeServer,
    body_of,
    error,
    make_client,
    ok,
    scalar,
    snapshot_routes,
    user_row,
)


def connect_reply(server: FakeServer, resolution: str, **extra: object) -> None:
    server.default("GET /api/sync/capabilities", CAPS)
    server.queue("POST /api/sync/connect", ok({"resolution": resolution, **extra}))


async def test_attach_requires_open(client: SyncClient, server: FakeServer) -> None:
    with pytest.raises(OpenRequiredError):
        await client.attach("u1")
    assert server.requests == []


async def test_sync_ops_before_attach_make_no_request(
    client: SyncClient, server: FakeServer
) -> None:
    await client.open()
    for call in (client.pull_to_stable, client.rebuild, client.last_bundle_seq_seen):
        with pytest.raises(AttachRequiredError):
            await call()
    assert server.requests == []


async def test_initialize_empty_connects_and_sends_headers(
    client: SyncClient, server: FakeServer
) -> None:
    await client.open()
    connect_reply(server, "initialize_empty")
    result = await client.attach(" u1 ")
    assert (result.status, result.outcome) == (AttachStatus.CONNECTED, AttachOutcome.STARTED_EMPTY)
    connect = server.requests[-1]
    assert body_of(connect) == {"has_local_pending_rows": False}
    assert connect.headers["authorization"] == "Bearer tok"
    assert connect.headers["oversync-source-id"] == (await client.source_info()).current_source_id
    assert connect.headers["content-type"] == "application/json"
    assert "content-type" not in server.requests[0].headers  # GET has no body
    assert await scalar(client, "SELECT attached_user_id FROM _sync_attachment_state") == "u1"


async def test_initialize_local_records_lease_and_reports_pending_rows(
    client: SyncClient, server: FakeServer
) -> None:
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO users VALUES ('a', 'Ann')")
    await client.open()
    connect_reply(server, "initialize_local", initialization_id="init-1")
    result = await client.attach("u1")
    assert result.outcome is AttachOutcome.SEEDED_FROM_LOCAL
    assert body_of(server.requests[-1]) == {"has_local_pending_rows": True}
    assert client.runtime.pending_initialization_id == "init-1"
    pending = await client.pending_sync_status()
    assert pending.pending_row_count == 2
    assert pending.blocks_detach
    assert result.sync_status is not None
    assert result.sync_status.authority.value == "pending_local_seed"


async def test_retry_later_surfaces_retry_after_without_state_change(
    client: SyncClient, server: FakeServer
) -> None:
    await client.open()
    connect_reply(server, "retry_later", retry_after_seconds=7)
    result = await client.attach("u1")
    assert result.status is AttachStatus.RETRY_LATER
    assert result.outcome is None
    assert result.retry_after == 7.0
    assert await scalar(client, "SELECT binding_state FROM _sync_attachment_state") == "anonymous"
    with pytest.raises(AttachRequiredError):
        await client.sync_status()


async def test_remote_authoritative_replaces_local_rows(
    client: SyncClient, server: FakeServer
) -> None:
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO users VALUES ('local', 'Lo')")
    await client.open()
    connect_reply(server, "remote_authoritative")
    snapshot_routes(server, [user_row("a", "Ann", 3), user_row("b", "Bob", 4),
                             user_row("c", "Cy", 5)], seq=9)
    result = await client.attach("u1")
    assert result.outcome is AttachOutcome.USED_REMOTE_STATE
    assert result.restore is not None
    assert (result.restore.bundle_seq, result.restore.row_count) == (9, 3)
    assert await scalar(client, "SELECT group_concat(id) FROM users ORDER BY id") == "a,b,c"
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_dirty_rows") == 0
    assert await scalar(client, "SELECT kind FROM _sync_operation_state") == "none"
    assert await client.last_bundle_seq_seen() == 9
    assert server.count("DELETE /api/sync/snapshot-sessions/snap-1") == 1


async def test_ownership_conflict_and_release(tmp_path: Path) -> None:
    server = FakeServer()
    first = await make_client(tmp_path / "c.db", server)
    with pytest.raises(DatabaseAlreadyOwnedError):
        await make_client(tmp_path / "c.db", server)
    await first.close()
    second = await make_client(tmp_path / "c.db", server)
    await second.close()
    for c in (first, second):
        await c.runtime.engine.dispose()


async def test_source_identity_persists_and_resume_needs_no_network(tmp_path: Path) -> None:
    server = FakeServer()
    first = await make_client(tmp_path / "c.db", server)
    await first.open()
    source = (await first.source_info()).current_source_id
    connect_reply(server, "initialize_empty")
    await first.attach("u1")
    await first.close()
    await first.runtime.engine.dispose()
    requests = len(server.requests)

    second = await make_client(tmp_path / "c.db", server)
    await second.open()
    assert (await second.source_info()).current_source_id == source
    result = await second.attach("u1")
    assert result.outcome is AttachOutcome.RESUMED_ATTACHED_STATE
    assert len(server.requests) == requests
    with pytest.raises(AttachBindingConflictError):
        await second.attach("u2")
    await second.close()
    await second.runtime.engine.dispose()


async def test_detach_blocked_by_dirty_rows_then_allowed_when_anonymous(
    client: SyncClient, server: FakeServer
) -> None:
    await client.open()
    connect_reply(server, "initialize_empty")
    await client.attach("u1")
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO users VALUES ('a', 'Ann')")
    result = await client.detach()
    assert (result.outcome, result.pending_row_count) == (DetachOutcome.BLOCKED_UNSYNCED_DATA, 1)
    assert await scalar(client, "SELECT COUNT(*) FROM users") == 1
    assert await scalar(client, "SELECT binding_state FROM _sync_attachment_state") == "attached"


async def test_detach_then_attach_other_user_resets_checkpoint(
    client: SyncClient, server: FakeServer
) -> None:
    await client.open()
    connect_reply(server, "remote_authoritative")
    snapshot_routes(server, [user_row("a", "Ann", 3)], seq=40)
    await client.attach("u1")
    assert await client.last_bundle_seq_seen() == 40
    source = (await client.source_info()).current_source_id

    result = await client.detach()
    assert result.outcome is DetachOutcome.DETACHED
    assert await scalar(client, "SELECT COUNT(*) FROM users") == 0
    assert await scalar(client, "SELECT last_bundle_seq_seen FROM _sync_attachment_state") == 0

    connect_reply(server, "initialize_empty")
    await client.attach("u2")
    assert await client.last_bundle_seq_seen() == 0
    assert (await client.source_info()).current_source_id == source


async def test_detach_with_immediate_fk_succeeds(client: SyncClient, server: FakeServer) -> None:
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO users VALUES ('a', 'Ann')")
        await conn.exec_driver_sql("INSERT INTO posts VALUES ('p', 'T', 'a')")
    await client.open()
    assert (await client.detach()).outcome is DetachOutcome.DETACHED
    assert await scalar(client, "SELECT COUNT(*) FROM posts") == 0


async def test_open_captures_preexisting_rows_once(client: SyncClient) -> None:
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO users VALUES ('a', 'Ann')")
    await client.open()
    await client.open()
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_dirty_rows") == 1
    assert await scalar(client, "SELECT payload FROM _sync_dirty_rows") == '{"id":"a","name":"Ann"}'


@pytest.mark.parametrize("status", [404, 405, 501])
async def test_missing_capabilities_is_unsupported(
    client: SyncClient, server: FakeServer, status: int
) -> None:
    await client.open()
    server.default("GET /api/sync/capabilities", ok({"detail": "x"}, status))
    with pytest.raises(AttachLifecycleUnsupportedError):
        await client.attach("u1")


async def test_capability_absent_and_connect_missing(
    client: SyncClient, server: FakeServer
) -> None:
    await client.open()
    server.queue("GET /api/sync/capabilities", ok(
        {"protocol_version": "1", "schema_version": 1, "features": {}}))
    with pytest.raises(AttachLifecycleUnsupportedError, match="connect_lifecycle"):
        await client.attach("u1")
    server.default("GET /api/sync/capabilities", CAPS)
    with pytest.raises(AttachLifecycleUnsupportedError, match="connect endpoint"):
        await client.attach("u1")


async def test_connect_failure_leaves_database_anonymous(
    client: SyncClient, server: FakeServer
) -> None:
    await client.open()
    server.default("GET /api/sync/capabilities", CAPS)
    server.default("POST /api/sync/connect", error(503, "service_unavailable"))
    with pytest.raises(RetryExhaustedError) as info:
        await client.attach("u1")
    assert (info.value.operation, info.value.attempts) == ("connect_request", 3)
    assert server.count("POST /api/sync/connect") == 3
    assert await scalar(client, "SELECT binding_state FROM _sync_attachment_state") == "anonymous"


async def test_uninstall_drops_metadata_and_closes(client: SyncClient) -> None:
    await client.open()
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO users VALUES ('a', 'Ann')")
    await client.uninstall_sync()
    assert await scalar(client, "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '_sync_%'") == 0
    assert await scalar(client, "SELECT COUNT(*) FROM users") == 1
    from oversync_sa.client.errors import ClientClosedError

    with pytest.raises(ClientClosedError):
        await client.open()


async def test_detach_rotates_a_source_that_already_pushed(
    client: SyncClient, server: FakeServer
) -> None:
    """CLIENT.md §12.28: the next user must not inherit the previous user's source sequence."""
    await client.open()
    connect_reply(server, "initialize_empty")
    await client.attach("u1")
    used = (await client.source_info()).current_source_id
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE _sync_source_state SET next_source_bundle_id = 4 WHERE source_id = ?",
            (used,),
        )
    assert (await client.detach()).outcome is DetachOutcome.DETACHED
    fresh = (await client.source_info()).current_source_id
    assert fresh != used
    assert client.runtime.source_id == fresh
    assert (
        await scalar(
            client,
            f"SELECT next_source_bundle_id FROM _sync_source_state WHERE source_id = '{fresh}'",
        )
        == 1
    )
