"""Authentication and ownership on the sync routes (SERVER.md §8)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import jwt as pyjwt
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from oversync_sa.litestar import issue_token
from oversync_sa.server import ServiceConfig, SyncService
from tests.http.http_support import SECRET, SOURCE, app_client, headers, make_app, uid, user_row

Client = httpx.AsyncClient

_ROUTES = [
    ("POST", "/sync/connect"),
    ("POST", "/sync/push-sessions"),
    ("POST", f"/sync/push-sessions/{uid(1)}/chunks"),
    ("POST", f"/sync/push-sessions/{uid(1)}/commit"),
    ("DELETE", f"/sync/push-sessions/{uid(1)}"),
    ("GET", "/sync/committed-bundles/1/rows"),
    ("GET", "/sync/pull"),
    ("GET", "/sync/watch"),
    ("POST", "/sync/snapshot-sessions"),
    ("GET", f"/sync/snapshot-sessions/{uid(1)}"),
    ("DELETE", f"/sync/snapshot-sessions/{uid(1)}"),
    ("GET", "/sync/capabilities"),
]


@pytest.fixture(scope="module")
def offline_service() -> SyncService:
    """A service that is never bootstrapped: authentication answers before any database use."""
    engine = create_async_engine("postgresql+asyncpg://unused@127.0.0.1:1/none")
    return SyncService(engine, ServiceConfig())


@pytest.fixture
async def offline(offline_service: SyncService) -> AsyncIterator[Client]:
    async with app_client(make_app(offline_service)) as test_client:
        yield test_client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Oversync-Source-ID": SOURCE}


@pytest.mark.parametrize(("method", "path"), _ROUTES)
@pytest.mark.parametrize(
    ("auth_headers", "message"),
    [
        ({}, "Authorization header required"),
        ({"Authorization": "Token abc"}, "Invalid authorization header format"),
        ({"Authorization": "Bearer a b"}, "Invalid authorization header format"),
        (_bearer("not-a-jwt"), "Invalid token"),
        (_bearer(issue_token("alice", "some-other-secret-of-32-bytes-or-more")), "Invalid token"),
        (_bearer(issue_token("alice", SECRET, now=time.time() - 3600)), "Invalid token"),
        (_bearer(pyjwt.encode({"sub": "alice", "exp": time.time() + 60}, "", algorithm="none")),
         "Invalid token"),
        (_bearer(issue_token("   ", SECRET)), "Invalid token"),
    ],
)
async def test_bad_tokens_are_401(
    offline: Client, method: str, path: str, auth_headers: dict[str, str], message: str
) -> None:
    resp = await offline.request(method, path, headers=auth_headers)
    assert resp.status_code == 401
    assert resp.json() == {"error": "authentication_failed", "message": message}


@pytest.mark.parametrize(("method", "path"), [r for r in _ROUTES if "capabilities" not in r[1]])
async def test_missing_source_header_is_400(offline: Client, method: str, path: str) -> None:
    auth = {"Authorization": headers()["Authorization"], "Oversync-Source-ID": "  "}
    resp = await offline.request(method, path, headers=auth)
    assert resp.status_code == 400
    assert resp.json() == {
        "error": "invalid_request", "message": "Oversync-Source-ID header is required"
    }


async def test_status_routes_are_open(client: Client) -> None:
    assert (await client.get("/syncx/status")).status_code == 200
    assert (await client.get("/syncx/health")).status_code == 200


async def _session_of(client: Client, user: str) -> str:
    await client.post("/sync/connect", json={"has_local_pending_rows": False},
                      headers=headers(user))
    resp = await client.post(
        "/sync/push-sessions", json={"source_bundle_id": 1, "planned_row_count": 1},
        headers=headers(user),
    )
    return str(resp.json()["push_id"])


async def test_another_users_push_session_is_forbidden(client: Client) -> None:
    push_id = await _session_of(client, "owner-user")
    await client.post("/sync/connect", json={"has_local_pending_rows": False},
                      headers=headers("intruder"))
    attempts = [
        client.post(f"/sync/push-sessions/{push_id}/chunks",
                    json={"start_row_ordinal": 0, "rows": [user_row(uid(1))]},
                    headers=headers("intruder")),
        client.post(f"/sync/push-sessions/{push_id}/commit", headers=headers("intruder")),
        client.delete(f"/sync/push-sessions/{push_id}", headers=headers("intruder")),
    ]
    for attempt in attempts:
        resp = await attempt
        assert resp.status_code == 403
        assert resp.json()["error"] == "push_session_forbidden"
        assert "owner-user" not in resp.text
    # The owner's session is untouched and still usable from another of its devices.
    chunk = await client.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": [user_row(uid(1))]},
        headers=headers("owner-user", "device-b"),
    )
    assert chunk.status_code == 200


async def test_another_users_snapshot_session_is_forbidden(client: Client) -> None:
    await client.post("/sync/connect", json={"has_local_pending_rows": False},
                      headers=headers("owner-user"))
    sid = (await client.post("/sync/snapshot-sessions", headers=headers("owner-user"))
           ).json()["snapshot_id"]
    for resp in (
        await client.get(f"/sync/snapshot-sessions/{sid}", headers=headers("intruder")),
        await client.delete(f"/sync/snapshot-sessions/{sid}", headers=headers("intruder")),
    ):
        assert resp.status_code == 403
        assert resp.json()["error"] == "snapshot_session_forbidden"
        assert "owner-user" not in resp.text
    assert (await client.get(f"/sync/snapshot-sessions/{sid}",
                             headers=headers("owner-user"))).status_code == 200


async def test_committed_rows_are_per_user(client: Client) -> None:
    push_id = await _session_of(client, "owner-user")
    await client.post(f"/sync/push-sessions/{push_id}/chunks",
                      json={"start_row_ordinal": 0, "rows": [user_row(uid(1))]},
                      headers=headers("owner-user"))
    await client.post(f"/sync/push-sessions/{push_id}/commit", headers=headers("owner-user"))
    await client.post("/sync/connect", json={"has_local_pending_rows": False},
                      headers=headers("intruder"))
    resp = await client.get("/sync/committed-bundles/1/rows", headers=headers("intruder"))
    assert resp.status_code == 404
    assert resp.json()["error"] == "committed_bundle_not_found"
