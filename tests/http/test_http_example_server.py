"""The reference server's own routes (SERVER.md §10): sign-in, test helpers, CORS, JWT text."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.litestar_server.app import ExampleServer, create_app
from examples.litestar_server.database import create_business_schema
from examples.litestar_server.settings import Settings, SettingsError
from tests.http.http_support import app_client

SETTINGS = Settings(jwt_secret="example-test-secret-with-enough-bytes")


@pytest.fixture
async def example(pg_engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    server = ExampleServer.create(pg_engine, SETTINGS)
    await create_business_schema(pg_engine, SETTINGS.business_schema)
    await server.service.bootstrap()
    async with app_client(create_app(server)) as client:
        yield client


async def _auth(client: httpx.AsyncClient, user: str) -> dict[str, str]:
    token = (await client.post("/dummy-signin", json={"user": user})).json()["token"]
    return {"Authorization": f"Bearer {token}", "Oversync-Source-ID": "dev-1"}


async def test_signin_and_helper_errors(example: httpx.AsyncClient) -> None:
    ok = await example.post("/dummy-signin", json={"user": "u1", "password": "x"})
    assert ok.status_code == 200
    assert list(ok.json()) == ["token", "expires_in", "user"]
    for body in (b"{", b'{"user": ""}'):
        bad = await example.post("/dummy-signin", content=body)
        assert bad.status_code == 400
        assert bad.headers["content-type"].startswith("text/plain")
        assert bad.json()["error"] == "invalid_request"


async def test_jwt_refusals_are_plain_text_and_cors_everywhere(
    example: httpx.AsyncClient,
) -> None:
    resp = await example.get("/sync/pull")
    assert resp.status_code == 401
    assert resp.text == "Authorization header required\n"
    assert resp.headers["access-control-allow-origin"] == "*"
    preflight = await example.options("/sync/push-sessions")
    assert preflight.status_code == 204
    assert "Oversync-Source-ID" in preflight.headers["access-control-allow-headers"]


async def test_retention_floor_helper(example: httpx.AsyncClient) -> None:
    auth = await _auth(example, "u1")
    await example.post("/sync/connect", json={}, headers=auth)
    missing = await example.post("/test/retention-floor",
                                 json={"user_id": "ghost", "retained_bundle_floor": 0})
    assert (missing.status_code, missing.json()["error"]) == (404, "user_state_not_found")
    negative = await example.post("/test/retention-floor",
                                  json={"user_id": "u1", "retained_bundle_floor": -1})
    assert negative.status_code == 400
    too_high = await example.post("/test/retention-floor",
                                  json={"user_id": "u1", "retained_bundle_floor": 5})
    assert (too_high.status_code, too_high.json()["error"]) == (
        500, "retention_floor_update_failed")
    ok = await example.post("/test/retention-floor",
                            json={"user_id": "u1", "retained_bundle_floor": 0})
    assert ok.json() == {"retained_bundle_floor": 0, "status": "ok", "user_id": "u1"}


async def test_watch_subscribers_and_reset(example: httpx.AsyncClient) -> None:
    assert (await example.get("/test/watch-subscribers")).status_code == 400
    count = await example.get("/test/watch-subscribers", params={"user_id": "nobody"})
    assert count.json() == {"process_local_only": True, "subscriber_count": 0,
                            "user_id": "nobody"}
    auth = await _auth(example, "u1")
    await example.post("/sync/connect", json={}, headers=auth)
    reset = await example.post("/test/reset")
    assert reset.json() == {"schema": "business", "status": "ok"}
    # The scope is gone: the user must connect again.
    pulled = await example.get("/sync/pull", headers=auth)
    assert pulled.json()["error"] == "scope_uninitialized"


def test_settings_from_env() -> None:
    settings = Settings.from_env({"PORT": "9000", "OVERSYNC_LOG_STAGE_TIMINGS": "yes"})
    assert (settings.port, settings.log_stage_timings, settings.database_url) == (
        9000, True, None)
    assert settings.pool_max_conns == 50
    for env in ({"OVERSYNC_DB_POOL_MAX_CONNS": "0"}, {"OVERSYNC_DB_POOL_MIN_CONNS": "60"},
                {"PORT": "x"}):
        with pytest.raises(SettingsError):
            Settings.from_env(env)
