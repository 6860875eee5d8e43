"""Snapshot rebuild behaviours pinned by go-oversync's ``oversqlite/pull_test.go`` that had no
counterpart here (named after the Go test in each docstring)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from oversync_sa.client.client import SyncClient
from oversync_sa.client.errors import (
    PendingPushReplayError,
    ProtocolViolationError,
    RetryExhaustedError,
)
from oversync_sa.errors import OversyncError
from tests.client.lifecycle.fakes import (
    SCHEMA,
    FakeServer,
    attached,
    error,
    ok,
    scalar,
    snapshot_routes,
    user_row,
)


def post_row(key: str, author: str, version: int) -> dict[str, Any]:
    return {"schema": SCHEMA, "table": "posts", "key": {"id": key}, "row_version": version,
            "payload": {"id": key, "title": "t", "author_id": author}}


async def test_rebuild_clears_a_stale_stage_of_another_snapshot(
    client: SyncClient, server: FakeServer
) -> None:
    """TestRebuildKeepSource_ClearsStaleSnapshotStageBeforeNewAttempt and
    TestSnapshotStageRows_AreIsolatedBySnapshotID: leftovers of an abandoned download never
    leak into the next snapshot."""
    await attached(client, server)
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO _sync_snapshot_stage (snapshot_id, row_ordinal, schema_name, table_name,"
            " key_json, row_version, payload) VALUES ('old-snap', 1, 'business', 'users',"
            " '{\"id\":\"ghost\"}', 9, '{\"id\":\"ghost\",\"name\":\"Ghost\"}')"
        )
    snapshot_routes(server, [user_row("a", "Ann", 3)], seq=3, snapshot_id="new-snap")

    await client.rebuild()

    assert await scalar(client, "SELECT group_concat(id) FROM users") == "a"
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_snapshot_stage") == 0
    assert await client.last_bundle_seq_seen() == 3


async def test_children_in_an_earlier_chunk_than_their_parent_apply(
    client: SyncClient, server: FakeServer
) -> None:
    """TestRebuildKeepSource_DeferredFKRowsApplyAcrossChunkBoundaries (chunks of two rows)."""
    await attached(client, server)
    rows = [post_row("p1", "a", 2), post_row("p2", "a", 2), user_row("x", "X", 1),
            user_row("a", "Ann", 2)]
    snapshot_routes(server, rows, seq=2)

    await client.rebuild()

    assert await scalar(client, "SELECT group_concat(id) FROM (SELECT id FROM posts"
                                " ORDER BY id)") == "p1,p2"
    assert await scalar(client, "SELECT COUNT(*) FROM users") == 2
    assert server.count("GET /api/sync/snapshot-sessions/snap-1") == 2


@pytest.mark.parametrize(
    "failure",
    [error(404, "snapshot_session_not_found", "gone"),
     error(409, "snapshot_session_expired", "expired")],
)
async def test_lost_snapshot_session_then_rebuild_restores_data(
    client: SyncClient, server: FakeServer, failure: httpx.Response
) -> None:
    """TestRebuildKeepSource_SnapshotSessionExpiredRetryRestoresData / ...NotFound...: the
    failed attempt changes nothing but rebuild_required; the next rebuild starts a new
    session from ordinal zero."""
    await attached(client, server)
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE _sync_apply_state SET apply_mode = 1")
        await conn.exec_driver_sql("INSERT INTO users VALUES ('local', 'Local')")
        await conn.exec_driver_sql("UPDATE _sync_apply_state SET apply_mode = 0")
    rows = [user_row("a", "Ann", 4), user_row("b", "Bob", 4), user_row("c", "Cy", 4)]
    server.queue("POST /api/sync/snapshot-sessions", ok({
        "snapshot_id": "snap-0", "snapshot_bundle_seq": 4, "row_count": 3,
        "expires_at": "2099-01-01T00:00:00Z",
    }))
    server.queue("GET /api/sync/snapshot-sessions/snap-0",
                 ok({"snapshot_id": "snap-0", "snapshot_bundle_seq": 4, "rows": rows[:2],
                     "next_row_ordinal": 2, "has_more": True}),
                 failure)
    server.default("DELETE /api/sync/snapshot-sessions/snap-0", httpx.Response(204))

    with pytest.raises(OversyncError):
        await client.rebuild()

    assert await scalar(client, "SELECT group_concat(id) FROM users") == "local"
    assert await scalar(client, "SELECT rebuild_required FROM _sync_attachment_state") == 1
    assert await client.last_bundle_seq_seen() == 0
    snapshot_routes(server, rows, seq=4)

    await client.rebuild()

    assert await scalar(client, "SELECT group_concat(id) FROM (SELECT id FROM users"
                                " ORDER BY id)") == "a,b,c"
    assert await scalar(client, "SELECT rebuild_required FROM _sync_attachment_state") == 0
    assert await client.last_bundle_seq_seen() == 4
    first = [r for r in server.requests if r.url.path.endswith("/snapshot-sessions/snap-1")]
    assert first[0].url.params["after_row_ordinal"] == "0"


async def test_failed_rotated_apply_keeps_the_old_source(
    client: SyncClient, server: FakeServer
) -> None:
    """TestRebuildRotateSource_SourceIDDoesNotRotateOnFailedFinalApply."""
    await attached(client, server)
    old = client.runtime.source_id
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE _sync_operation_state SET kind = 'source_recovery',"
            " reason = 'source_sequence_out_of_order', replacement_source_id = 'reserved-new'"
        )
        await conn.exec_driver_sql("INSERT INTO _sync_source_state (source_id) VALUES"
                                   " ('reserved-new')")
    # A row the local schema cannot take fails the final apply (payload without "name").
    snapshot_routes(server, [user_row("z", "Z", 2) | {"payload": {"id": "z"}}], seq=2)

    with pytest.raises(OversyncError):
        await client.rebuild()

    assert client.runtime.source_id == old
    assert await scalar(client, "SELECT current_source_id FROM _sync_attachment_state") == old
    assert await scalar(client, "SELECT kind || ':' || replacement_source_id"
                                " FROM _sync_operation_state") == "source_recovery:reserved-new"
    snapshot_routes(server, [user_row("z", "Z", 2)], seq=2, snapshot_id="snap-2")

    await client.rebuild()

    assert client.runtime.source_id == "reserved-new"
    creates = [r for r in server.requests if r.url.path == "/api/sync/snapshot-sessions"]
    assert all(b'"new_source_id":"reserved-new"' in r.content for r in creates)
    assert len(creates) == 2


@pytest.mark.parametrize(
    ("session", "problem"),
    [
        ({"snapshot_id": "", "snapshot_bundle_seq": 1, "row_count": 0,
          "expires_at": "2099-01-01T00:00:00Z"}, "snapshot_id"),
        ({"snapshot_id": "s", "snapshot_bundle_seq": 0, "row_count": 2,
          "expires_at": "2099-01-01T00:00:00Z"}, "snapshot_bundle_seq"),
        ({"snapshot_id": "s", "snapshot_bundle_seq": 1, "row_count": 0,
          "expires_at": ""}, "expires_at"),
    ],
)
async def test_malformed_snapshot_session_fails_closed(
    client: SyncClient, server: FakeServer, session: dict[str, Any], problem: str
) -> None:
    """TestRebuildKeepSource_RejectsMalformedSnapshotResponse / ...MissingBundleSeq."""
    await attached(client, server)
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE _sync_apply_state SET apply_mode = 1")
        await conn.exec_driver_sql("INSERT INTO users VALUES ('local', 'Local')")
        await conn.exec_driver_sql("UPDATE _sync_apply_state SET apply_mode = 0")
    server.queue("POST /api/sync/snapshot-sessions", ok(session))

    with pytest.raises(ProtocolViolationError, match=problem):
        await client.rebuild()

    assert await scalar(client, "SELECT group_concat(id) FROM users") == "local"
    assert await scalar(client, "SELECT rebuild_required FROM _sync_attachment_state") == 1
    assert server.count("GET /api/sync/snapshot-sessions/s") == 0


async def test_malformed_snapshot_chunk_fails_closed(
    client: SyncClient, server: FakeServer
) -> None:
    """A chunk for the wrong bundle seq is refused before anything is applied."""
    await attached(client, server)
    server.queue("POST /api/sync/snapshot-sessions", ok({
        "snapshot_id": "s", "snapshot_bundle_seq": 4, "row_count": 1,
        "expires_at": "2099-01-01T00:00:00Z",
    }))
    server.queue("GET /api/sync/snapshot-sessions/s", ok({
        "snapshot_id": "s", "snapshot_bundle_seq": 3, "rows": [user_row("a", "Ann", 3)],
        "next_row_ordinal": 1, "has_more": False,
    }))
    server.default("DELETE /api/sync/snapshot-sessions/s", httpx.Response(204))

    with pytest.raises(ProtocolViolationError, match="snapshot_bundle_seq"):
        await client.rebuild()

    assert await scalar(client, "SELECT COUNT(*) FROM users") == 0
    assert await client.last_bundle_seq_seen() == 0


async def test_pull_and_rebuild_refuse_while_an_outbox_awaits_replay(
    client: SyncClient, server: FakeServer
) -> None:
    """TestPullAndRebuild_RejectWhilePushOutboundReplayIsPending: nothing may overwrite an
    unreplayed bundle, and the refusal happens before any request."""
    await attached(client, server)
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO users VALUES ('a', 'Ann')")
    server.default("POST /api/sync/push-sessions", httpx.Response(503))
    with pytest.raises(RetryExhaustedError):
        await client.push_pending()
    before = len(server.requests)

    for operation in (client.pull_to_stable, client.rebuild):
        with pytest.raises(PendingPushReplayError) as caught:
            await operation()
        assert caught.value.outbound_count == 1

    assert len(server.requests) == before
    assert await scalar(client, "SELECT state FROM _sync_outbox_bundle") == "prepared"
