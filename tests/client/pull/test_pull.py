"""pull_to_stable, snapshot rebuild and transport retry behaviour against a scripted server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from oversync_sa.client import RetryPolicy
from oversync_sa.client.client import SyncClient
from oversync_sa.client.errors import (
    DirtyStateRejectedError,
    PayloadEncodingError,
    ProtocolViolationError,
    RetryExhaustedError,
    UnexpectedStatusError,
)
from oversync_sa.client.results import RemoteSyncOutcome
from oversync_sa.client.transport import SyncTransport, http_status_of
from oversync_sa.errors import AuthenticationFailedError, SourceRetiredError, WireError
from tests.client.lifecycle.fakes import (
    CAPS,
    FakeServer,
    attached,
    error,
    ok,
    scalar,
    snapshot_routes,
    user_row,
)


def bundle(seq: int, *rows: dict[str, Any]) -> dict[str, Any]:
    return {"bundle_seq": seq, "source_id": "other", "source_bundle_id": seq, "rows": list(rows)}


def page(stable: int, *bundles: dict[str, Any], has_more: bool = False) -> httpx.Response:
    return ok({"stable_bundle_seq": stable, "bundles": list(bundles), "has_more": has_more})


async def test_pull_pages_to_ceiling_and_applies(client: SyncClient, server: FakeServer) -> None:
    await attached(client, server)
    server.queue(
        "GET /api/sync/pull",
        page(3, bundle(1, user_row("a", "Ann", 1, "INSERT")),
             bundle(2, user_row("b", "Bob", 2, "INSERT")), has_more=True),
        page(3, bundle(3, user_row("a", "", 3, "DELETE") | {"payload": None})),
    )
    report = await client.pull_to_stable()
    assert report.outcome is RemoteSyncOutcome.APPLIED_INCREMENTAL
    pulls = [r for r in server.requests if r.url.path == "/api/sync/pull"]
    assert [str(r.url.query, "ascii") for r in pulls] == [
        "after_bundle_seq=0&max_bundles=2", "after_bundle_seq=2&max_bundles=2&target_bundle_seq=3"
    ]
    assert await scalar(client, "SELECT group_concat(id) FROM users") == "b"
    tombstone = "SELECT deleted FROM _sync_row_state WHERE key_json LIKE '%a%'"
    assert await scalar(client, tombstone) == 1
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_dirty_rows") == 0  # apply mode
    assert await client.last_bundle_seq_seen() == 3

    server.queue("GET /api/sync/pull", page(3))
    assert (await client.pull_to_stable()).outcome is RemoteSyncOutcome.ALREADY_AT_TARGET


async def test_bad_payload_fails_bundle_without_checkpoint(
    client: SyncClient, server: FakeServer
) -> None:
    await attached(client, server)
    bad = user_row("b", "Bob", 2, "INSERT") | {"payload": {"id": "b"}}
    server.queue("GET /api/sync/pull",
                 page(2, bundle(1, user_row("a", "Ann", 1, "INSERT")), bundle(2, bad)))
    with pytest.raises(PayloadEncodingError, match="every table column"):
        await client.pull_to_stable()
    assert await scalar(client, "SELECT group_concat(id) FROM users") == "a"
    assert await client.last_bundle_seq_seen() == 1
    assert await scalar(client, "SELECT apply_mode FROM _sync_apply_state") == 0


async def test_skips_rows_already_at_version(client: SyncClient, server: FakeServer) -> None:
    await attached(client, server)
    server.queue("GET /api/sync/pull", page(1, bundle(1, user_row("a", "Ann", 5, "INSERT"))))
    await client.pull_to_stable()
    server.queue("GET /api/sync/pull", page(2, bundle(2, user_row("a", "Old", 4, "UPDATE"))))
    await client.pull_to_stable()
    assert await scalar(client, "SELECT name FROM users") == "Ann"
    assert await client.last_bundle_seq_seen() == 2


async def test_pull_refused_while_dirty(client: SyncClient, server: FakeServer) -> None:
    await attached(client, server)
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO users VALUES ('x', 'X')")
    before = len(server.requests)
    with pytest.raises(DirtyStateRejectedError) as info:
        await client.pull_to_stable()
    assert info.value.dirty_count == 1
    assert len(server.requests) == before


@pytest.mark.parametrize(
    "reply",
    [
        page(5, has_more=True),  # Go loops forever here
        page(0, bundle(1, user_row("a", "A", 1, "INSERT"))),
        page(2, bundle(1, user_row("a", "A", 1, "INSERT") | {"schema": "other"})),
        page(2, bundle(1, user_row("a", "A", 1, "INSERT") | {"table": "nope"})),
        ok({"nonsense": True}),
    ],
)
async def test_malformed_pages_fail_closed(
    client: SyncClient, server: FakeServer, reply: httpx.Response
) -> None:
    await attached(client, server)
    server.queue("GET /api/sync/pull", reply)
    with pytest.raises(ProtocolViolationError):
        await client.pull_to_stable()
    assert await client.last_bundle_seq_seen() == 0


async def test_history_pruned_rebuilds_from_snapshot(
    client: SyncClient, server: FakeServer
) -> None:
    await attached(client, server)
    server.queue("GET /api/sync/pull", error(409, "history_pruned"))
    snapshot_routes(server, [user_row("a", "Ann", 3), user_row("b", "Bob", 4)], seq=7)
    report = await client.pull_to_stable()
    assert report.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    assert report.restore is not None
    assert report.restore.bundle_seq == 7
    assert await client.last_bundle_seq_seen() == 7
    assert await scalar(client, "SELECT COUNT(*) FROM users") == 2


async def test_pull_from_zero_above_pruned_history_rebuilds_from_snapshot(
    client: SyncClient, server: FakeServer
) -> None:
    # The server answers after_bundle_seq=0 from above its floor without history_pruned
    # (SERVER.md §6.2): a first bundle past 1 means bundle 1 was pruned, so apply nothing.
    await attached(client, server)
    server.queue("GET /api/sync/pull", page(3, bundle(2, user_row("b", "Bob", 2, "INSERT")),
                                            bundle(3, user_row("c", "Cy", 3, "INSERT"))))
    snapshot_routes(server, [user_row("a", "Ann", 1), user_row("b", "Bob", 2),
                             user_row("c", "Cy", 3)], seq=3)
    report = await client.pull_to_stable()
    assert report.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    assert server.count("GET /api/sync/pull") == 1
    assert await scalar(client, "SELECT group_concat(id) FROM (SELECT id FROM users"
                                " ORDER BY id)") == "a,b,c"
    assert await client.last_bundle_seq_seen() == 3


async def test_rebuild_stages_in_chunks_and_reports_progress(
    client: SyncClient, server: FakeServer
) -> None:
    await attached(client, server)
    rows = [user_row(f"k{i}", f"N{i}", i + 1) for i in range(5)]
    snapshot_routes(server, rows, seq=12)
    seen: list[tuple[int, int]] = []
    report = await client.rebuild(lambda done, total: seen.append((done, total)))
    assert report.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5), (5, 5)]
    assert server.count("GET /api/sync/snapshot-sessions/snap-1") == 3
    assert await scalar(client, "SELECT COUNT(*) FROM users") == 5
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_snapshot_stage") == 0
    assert await scalar(client, "SELECT rebuild_required FROM _sync_attachment_state") == 0


async def test_failed_rebuild_rolls_back_and_keeps_rebuild_required(
    client: SyncClient, server: FakeServer
) -> None:
    await attached(client, server)
    server.queue("GET /api/sync/pull", page(1, bundle(1, user_row("a", "Ann", 1, "INSERT"))))
    await client.pull_to_stable()
    snapshot_routes(server, [user_row("z", "Z", 2) | {"payload": {"id": "z"}}], seq=9)
    with pytest.raises(PayloadEncodingError):
        await client.rebuild()
    assert await scalar(client, "SELECT group_concat(id) FROM users") == "a"
    assert await client.last_bundle_seq_seen() == 1
    assert await scalar(client, "SELECT rebuild_required FROM _sync_attachment_state") == 1


async def test_rotated_rebuild_adopts_reserved_source(
    client: SyncClient, server: FakeServer
) -> None:
    await attached(client, server)
    old = client.runtime.source_id
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE _sync_operation_state SET kind = 'source_recovery', reason = 'source_retired',"
            " replacement_source_id = 'new-src'"
        )
        await conn.exec_driver_sql(
            "UPDATE _sync_outbox_bundle SET state = 'prepared', source_id = ?,"
            " source_bundle_id = 4",
            (old,),
        )
    # Another install already retired our source in favour of "srv-src"; the server refuses
    # any other rotation of it (SERVER.md §7.2), so the rebuild takes a keep-source snapshot
    # and moves to the reserved id, which the server has never seen (a retry would otherwise
    # diverge the same way forever).
    server.queue("POST /api/sync/snapshot-sessions",
                 error(409, "source_retired", source_id=old, replaced_by_source_id="srv-src"))
    snapshot_routes(server, [user_row("a", "Ann", 2)], seq=3)
    await client.rebuild()
    creates = [r for r in server.requests if r.url.path == "/api/sync/snapshot-sessions"]
    assert len(creates) == 2
    assert b'"new_source_id":"new-src"' in creates[0].content
    assert old.encode() in creates[0].content
    assert creates[1].content == b""
    assert client.runtime.source_id == "new-src"
    assert (await client.source_info()).current_source_id == "new-src"
    assert not (await client.source_info()).source_recovery_required
    assert await scalar(client, "SELECT state FROM _sync_outbox_bundle") == "prepared"
    assert await scalar(client, "SELECT source_id FROM _sync_outbox_bundle") == "new-src"
    assert server.requests[-4].headers["oversync-source-id"] == old
    info = await client.source_info()
    assert info.current_source_id == "new-src"
    assert not info.source_recovery_required
    assert await scalar(client, "SELECT source_bundle_id FROM _sync_outbox_bundle") == 1


# ----------------------------------------------------------------------- transport


def transport(server: FakeServer, policy: RetryPolicy | None = None) -> SyncTransport:
    return SyncTransport(
        "http://h/", lambda: "t", transport=server.transport,
        retry_policy=policy or RetryPolicy(initial_backoff=0.001, max_backoff=0.001),
    )


async def test_retry_503_then_success_is_two_requests() -> None:
    server = FakeServer()
    server.queue("GET /sync/pull", error(503, "service_unavailable"), page(0))
    result = await transport(server).pull(0, 10)
    assert result.stable_bundle_seq == 0
    assert len(server.requests) == 2


async def test_retry_exhausted_after_three_503() -> None:
    server = FakeServer()
    server.default("GET /sync/pull", httpx.Response(503, text="busy"))
    with pytest.raises(RetryExhaustedError) as info:
        await transport(server).pull(0, 10)
    assert (info.value.operation, info.value.attempts) == ("pull_request", 3)
    assert isinstance(info.value.last_error, UnexpectedStatusError)
    assert len(server.requests) == 3


async def test_401_is_not_retried_and_maps_to_wire_error() -> None:
    server = FakeServer()
    server.default("GET /sync/pull", error(401, "authentication_failed", "nope"))
    with pytest.raises(AuthenticationFailedError) as info:
        await transport(server).pull(0, 10)
    assert http_status_of(info.value) == 401
    assert len(server.requests) == 1


async def test_disabled_policy_is_single_attempt() -> None:
    server = FakeServer()
    server.default("GET /sync/pull", error(503, "service_unavailable"))
    with pytest.raises(RetryExhaustedError):
        await transport(server, RetryPolicy(enabled=False)).pull(0, 10)
    assert len(server.requests) == 1


async def test_connection_errors_are_retried() -> None:
    server = FakeServer()

    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("reset", request=request)

    server.queue("GET /sync/capabilities", boom, CAPS)
    caps = await transport(server).capabilities()
    assert caps.features.connect_lifecycle
    assert len(server.requests) == 2


async def test_error_bodies_map_to_typed_errors() -> None:
    server = FakeServer()
    server.queue("POST /sync/push-sessions",
                 error(409, "source_retired", "gone", source_id="s", replaced_by_source_id="r"),
                 error(418, "teapot", "custom"),
                 httpx.Response(500, text="<html>"))
    t = transport(server)
    from oversync_sa.wire import PushSessionCreateRequest

    request = PushSessionCreateRequest(source_bundle_id=1, planned_row_count=1)
    with pytest.raises(SourceRetiredError) as retired:
        await t.create_push_session(request)
    assert retired.value.replaced_by_source_id == "r"
    with pytest.raises(WireError) as custom:
        await t.create_push_session(request)
    assert custom.value.code == "teapot"
    assert http_status_of(custom.value) == 418
    with pytest.raises(UnexpectedStatusError) as raw:
        await t.create_push_session(request)
    assert raw.value.status == 500
    assert raw.value.body == b"<html>"
    assert len(server.requests) == 3  # push requests are single attempts


async def test_path_segments_are_escaped_and_delete_is_best_effort() -> None:
    server = FakeServer()
    assert await transport(server).delete_snapshot_session("a/b c") is False
    assert server.requests[0].url.raw_path == b"/sync/snapshot-sessions/a%2Fb%20c"
