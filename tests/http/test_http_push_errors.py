"""Contract error codes of connect and the push-session routes (SERVER.md §4, §5, §9.2)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from oversync_sa.server import SyncService
from tests.http.http_support import app_client, headers, make_app, uid, user_row

Client = httpx.AsyncClient


async def _connected(client: Client, user: str = "alice") -> None:
    resp = await client.post(
        "/sync/connect", json={"has_local_pending_rows": False}, headers=headers(user)
    )
    assert resp.status_code == 200, resp.text


async def _session(client: Client, planned: int = 1, user: str = "alice") -> str:
    resp = await client.post(
        "/sync/push-sessions",
        json={"source_bundle_id": 1, "planned_row_count": planned},
        headers=headers(user),
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["push_id"])


def _error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = dict(resp.json())
    assert body["error"] == code
    return body


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b'{"has_local_pending_rows": "yes"}',
        b'{"has_local_pending_rows": NaN}',
        b"[]",
    ],
)
async def test_connect_rejects_undecodable_bodies(client: Client, content: bytes) -> None:
    resp = await client.post("/sync/connect", content=content, headers=headers())
    body = _error(resp, 400, "invalid_request")
    assert body["message"] == "Failed to parse connect request"


async def test_connect_accepts_go_lenient_bodies(client: Client) -> None:
    resp = await client.post(
        "/sync/connect", content=b'{"Has_Local_Pending_Rows":false,"x":1} trailing',
        headers=headers(),
    )
    assert resp.status_code == 200
    null = await client.post("/sync/connect", content=b"null", headers=headers("bob"))
    assert null.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"source_bundle_id": 0, "planned_row_count": 1}, 400, "push_session_invalid"),
        ({"source_bundle_id": 1, "planned_row_count": 0}, 400, "push_session_invalid"),
        ({"source_bundle_id": 2, "planned_row_count": 1}, 409, "source_sequence_out_of_order"),
        ({"source_bundle_id": "1", "planned_row_count": 1}, 400, "invalid_request"),
        ({"source_bundle_id": 1.5, "planned_row_count": 1}, 400, "invalid_request"),
    ],
)
async def test_push_create_errors(
    client: Client, body: dict[str, Any], status: int, code: str
) -> None:
    await _connected(client)
    _error(await client.post("/sync/push-sessions", json=body, headers=headers()), status, code)


async def test_push_create_before_connect_is_scope_uninitialized(client: Client) -> None:
    resp = await client.post(
        "/sync/push-sessions", json={"source_bundle_id": 1, "planned_row_count": 1},
        headers=headers(),
    )
    _error(resp, 409, "scope_uninitialized")


async def test_push_create_with_lease_id_on_uninitialized_scope_is_gone(client: Client) -> None:
    resp = await client.post(
        "/sync/push-sessions",
        json={"source_bundle_id": 1, "planned_row_count": 1, "initialization_id": "x"},
        headers=headers(),
    )
    _error(resp, 410, "initialization_expired")


async def test_chunk_validation_runs_before_the_session_lookup(client: Client) -> None:
    await _connected(client)
    unknown = uid(999)
    resp = await client.post(
        f"/sync/push-sessions/{unknown}/chunks",
        json={"start_row_ordinal": 0, "rows": []},
        headers=headers(),
    )
    _error(resp, 400, "push_chunk_invalid")
    valid = await client.post(
        f"/sync/push-sessions/{unknown}/chunks",
        json={"start_row_ordinal": 0, "rows": [user_row(uid(1))]},
        headers=headers(),
    )
    _error(valid, 404, "push_session_not_found")
    not_uuid = await client.post(
        "/sync/push-sessions/not-a-uuid/chunks",
        json={"start_row_ordinal": 0, "rows": [user_row(uid(1))]},
        headers=headers(),
    )
    _error(not_uuid, 404, "push_session_not_found")


@pytest.mark.parametrize(
    ("chunk", "status", "code"),
    [
        ({"start_row_ordinal": 1, "rows": [user_row(uid(1))]}, 409, "push_chunk_out_of_order"),
        ({"start_row_ordinal": -1, "rows": [user_row(uid(1))]}, 400, "push_chunk_invalid"),
        (
            {"start_row_ordinal": 0, "rows": [user_row(uid(1)), user_row(uid(2))]},
            400,
            "push_chunk_invalid",
        ),
        ({"start_row_ordinal": 0, "rows": [{**user_row(uid(1)), "op": "UPSERT"}]}, 400,
         "push_chunk_invalid"),
        ({"start_row_ordinal": 0, "rows": "nope"}, 400, "invalid_request"),
    ],
)
async def test_chunk_errors(
    client: Client, chunk: dict[str, Any], status: int, code: str
) -> None:
    await _connected(client)
    push_id = await _session(client)
    resp = await client.post(
        f"/sync/push-sessions/{push_id}/chunks", json=chunk, headers=headers()
    )
    _error(resp, status, code)


async def test_commit_errors(client: Client) -> None:
    await _connected(client)
    _error(await client.post(f"/sync/push-sessions/{uid(5)}/commit", headers=headers()),
           404, "push_session_not_found")
    push_id = await _session(client)
    _error(await client.post(f"/sync/push-sessions/{push_id}/commit", headers=headers()),
           400, "push_commit_invalid")


async def test_commit_conflict_has_structured_body(client: Client) -> None:
    await _connected(client)
    push_id = await _session(client)
    await client.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": [user_row(uid(1))]}, headers=headers(),
    )
    assert (await client.post(f"/sync/push-sessions/{push_id}/commit",
                              headers=headers())).status_code == 200
    second = await client.post(
        "/sync/push-sessions", json={"source_bundle_id": 2, "planned_row_count": 1},
        headers=headers(),
    )
    again = second.json()["push_id"]
    await client.post(
        f"/sync/push-sessions/{again}/chunks",
        json={"start_row_ordinal": 0, "rows": [user_row(uid(1), "Twin")]}, headers=headers(),
    )
    body = _error(
        await client.post(f"/sync/push-sessions/{again}/commit", headers=headers()),
        409, "push_conflict",
    )
    assert body["conflict"]["server_row_version"] == 1
    assert body["conflict"]["server_row"]["name"] == "Ada"


async def test_replayed_create_is_already_committed(client: Client) -> None:
    await _connected(client)
    push_id = await _session(client)
    await client.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": [user_row(uid(1))]}, headers=headers(),
    )
    await client.post(f"/sync/push-sessions/{push_id}/commit", headers=headers())
    replay = await client.post(
        "/sync/push-sessions", json={"source_bundle_id": 1, "planned_row_count": 1},
        headers=headers(),
    )
    assert replay.status_code == 200
    assert replay.json()["status"] == "already_committed"
    _error(await client.post(f"/sync/push-sessions/{push_id}/commit", headers=headers()),
           404, "push_session_not_found")


async def test_oversized_body_is_the_endpoint_decode_error(service: SyncService) -> None:
    app = make_app(service, request_max_body_size=64)
    async with app_client(app) as small:
        resp = await small.post(
            "/sync/push-sessions",
            content=b'{"source_bundle_id": 1, "planned_row_count": 1, "pad": "' + b"x" * 100
            + b'"}',
            headers={**headers(), "Content-Type": "application/json"},
        )
        _error(resp, 400, "invalid_request")
        snapshot = await small.post(
            "/sync/snapshot-sessions", content=b" " * 100, headers=headers()
        )
        _error(snapshot, 400, "snapshot_session_invalid")
