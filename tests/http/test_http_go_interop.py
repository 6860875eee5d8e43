"""Regressions found by running go-oversync's own clients against our server (docs/interop.md).

Go's ``encoding/json`` rejects a whole body on any syntax error, so every answer here is parsed
strictly from its raw bytes rather than trusting a lenient decoder.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any, Final

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.litestar_server.app import ExampleServer, create_app, database_error_text
from examples.litestar_server.database import create_business_schema
from examples.litestar_server.settings import Settings
from tests.http.http_support import app_client, headers, uid, user_row

Client = httpx.AsyncClient


def _strict_json(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, resp.text
    return json.loads(resp.content.decode("utf-8"))


async def _push(client: Client, rows: list[dict[str, Any]], sbid: int) -> dict[str, Any]:
    create = await client.post(
        "/sync/push-sessions",
        json={"source_bundle_id": sbid, "planned_row_count": len(rows)},
        headers=headers(),
    )
    push_id = _strict_json(create)["push_id"]
    chunk = await client.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": rows},
        headers=headers(),
    )
    _strict_json(chunk)
    commit = await client.post(f"/sync/push-sessions/{push_id}/commit", headers=headers())
    return dict(_strict_json(commit))


async def test_delete_rows_are_valid_json_without_payload_on_every_read_route(
    client: Client,
) -> None:
    """A DELETE row read back from storage used to be written as ``"payload":}``.

    Go clients fetch the committed rows after every push and pull peers' bundles, so any
    bundle with a DELETE broke both (mobile_flow ``bundle-fk-atomicity``, ``files-sync``...).
    """
    connect = await client.post(
        "/sync/connect", json={"has_local_pending_rows": False}, headers=headers()
    )
    assert _strict_json(connect)["resolution"] == "initialize_empty"
    await _push(client, [user_row(uid(1)), user_row(uid(2), "Bob")], sbid=1)
    deleted = await _push(client, [user_row(uid(1), op="DELETE", base=1)], sbid=2)
    assert deleted["bundle_seq"] == 2

    page = _strict_json(
        await client.get("/sync/committed-bundles/2/rows", headers=headers())
    )
    assert page["rows"] == [
        {
            "schema": "business",
            "table": "users",
            "key": {"id": uid(1)},
            "op": "DELETE",
            "row_version": 2,
        }
    ]
    assert page["bundle_hash"] == deleted["bundle_hash"]

    pull = _strict_json(await client.get("/sync/pull", headers=headers("alice", "device-b")))
    assert [b["bundle_seq"] for b in pull["bundles"]] == [1, 2]
    delete_row = pull["bundles"][1]["rows"][0]
    assert delete_row["op"] == "DELETE"
    assert "payload" not in delete_row
    assert all("payload" in row for row in pull["bundles"][0]["rows"])


# ------------------------------------------------------------------ the reference server

EXAMPLE_SETTINGS = Settings(jwt_secret="example-interop-secret-with-enough-bytes")
GO_TEXT: Final = "text/plain; charset=utf-8"


@pytest.fixture
async def example(pg_engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    server = ExampleServer.create(pg_engine, EXAMPLE_SETTINGS)
    await create_business_schema(pg_engine, EXAMPLE_SETTINGS.business_schema)
    await server.service.bootstrap()
    async with app_client(create_app(server)) as test_client:
        yield test_client


async def _example_auth(client: Client, user: str) -> dict[str, str]:
    token = (await client.post("/dummy-signin", json={"user": user})).json()["token"]
    return {"Authorization": f"Bearer {token}", "Oversync-Source-ID": "dev-1"}


def _assert_cors(resp: httpx.Response) -> None:
    assert resp.headers["access-control-allow-origin"] == "*"
    assert resp.headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/sync/connect", "POST"),
        ("DELETE", "/sync/pull", "GET, HEAD"),
        ("POST", "/syncx/health", "GET, HEAD"),
        ("GET", "/dummy-signin", "POST"),
    ],
)
async def test_wrong_method_is_go_mux_plain_text_405(
    example: Client, method: str, path: str, allow: str
) -> None:
    """Go's router answers before the library: plain text, ``Allow``, and the CORS headers."""
    resp = await example.request(method, path)
    assert resp.status_code == 405
    assert resp.content == b"Method Not Allowed\n"
    assert resp.headers["content-type"] == GO_TEXT
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["allow"] == allow
    _assert_cors(resp)


async def test_unknown_path_is_go_mux_404_and_options_is_204_everywhere(
    example: Client,
) -> None:
    resp = await example.get("/sync/nothing")
    assert resp.status_code == 404
    assert resp.content == b"404 page not found\n"
    assert resp.headers["content-type"] == GO_TEXT
    assert resp.headers["x-content-type-options"] == "nosniff"
    _assert_cors(resp)
    for path in ("/no/such/path", "/sync/push-sessions"):
        preflight = await example.options(path)
        assert (preflight.status_code, preflight.content) == (204, b"")
        _assert_cors(preflight)


async def test_cors_headers_are_sent_once(example: Client) -> None:
    resp = await example.post("/dummy-signin", json={"user": "u1"})
    assert resp.status_code == 200
    assert resp.headers.get_list("access-control-allow-origin") == ["*"]


async def test_helper_errors_have_a_single_charset(example: Client) -> None:
    """Go sniffs these JSON bodies as ``text/plain; charset=utf-8`` - once, not twice."""
    for resp in (
        await example.post("/dummy-signin", content=b"x"),
        await example.post("/dummy-signin", json={}),
        await example.get("/test/watch-subscribers"),
        await example.post(
            "/test/retention-floor", json={"user_id": "ghost", "retained_bundle_floor": 0}
        ),
    ):
        assert resp.status_code in (400, 404)
        assert resp.headers["content-type"] == GO_TEXT
        json.loads(resp.content)


async def test_retention_floor_failure_reads_like_pgx(example: Client) -> None:
    auth = await _example_auth(example, "u1")
    await example.post("/sync/connect", json={}, headers=auth)
    resp = await example.post(
        "/test/retention-floor", json={"user_id": "u1", "retained_bundle_floor": 5}
    )
    assert resp.status_code == 500
    body = resp.json()
    assert body["error"] == "retention_floor_update_failed"
    assert body["message"] == (
        'ERROR: new row for relation "user_state" violates check constraint '
        '"user_state_retained_floor_chk" (SQLSTATE 23514)'
    )


def test_database_error_text_leaves_other_errors_alone() -> None:
    assert database_error_text(RuntimeError("boom")) == "boom"


async def test_not_found_and_pruned_messages_use_go_wording(example: Client) -> None:
    auth = await _example_auth(example, "u1")
    await example.post("/sync/connect", json={}, headers=auth)
    missing = await example.get("/sync/committed-bundles/99/rows", headers=auth)
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "committed_bundle_not_found", "message": "committed bundle 99 was not found"},
    )
    for path in ("/sync/push-sessions/nope/commit",):
        resp = await example.post(path, headers=auth)
        assert resp.json()["message"] == "push session nope was not found"
    unknown = "00000000-0000-0000-0000-000000000000"
    for sid in (unknown, "not-a-uuid"):
        resp = await example.get(f"/sync/snapshot-sessions/{sid}", headers=auth)
        assert (resp.status_code, resp.json()) == (
            404,
            {
                "error": "snapshot_session_not_found",
                "message": f"snapshot session {sid} was not found",
            },
        )
    create = await example.post(
        "/sync/push-sessions", json={"source_bundle_id": 1, "planned_row_count": 1},
        headers=auth,
    )
    push_id = create.json()["push_id"]
    await example.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": [user_row(uid(1))]},
        headers=auth,
    )
    assert (await example.post(f"/sync/push-sessions/{push_id}/commit", headers=auth)).is_success
    floor = await example.post(
        "/test/retention-floor", json={"user_id": "u1", "retained_bundle_floor": 1}
    )
    assert floor.status_code == 200
    pruned = await example.get("/sync/committed-bundles/1/rows", headers=auth)
    assert (pruned.status_code, pruned.json()) == (
        409,
        {
            "error": "history_pruned",
            "message": "requested checkpoint 1 is older than retained history floor 1 for user u1",
        },
    )


async def test_scope_initializing_message_renders_the_lease_end_like_go(client: Client) -> None:
    """Go prints the lease end with ``time.RFC3339Nano`` in UTC: ``...Z``, never ``+00:00``."""
    leased = await client.post(
        "/sync/connect", json={"has_local_pending_rows": True}, headers=headers()
    )
    assert _strict_json(leased)["resolution"] == "initialize_local"
    pulled = await client.get("/sync/pull", headers=headers("alice", "device-b"))
    assert pulled.status_code == 409
    body = pulled.json()
    assert body["error"] == "scope_initializing"
    assert re.fullmatch(
        r"sync scope for user alice is initializing until "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z",
        body["message"],
    ), body["message"]
