"""Lifespan, shutdown draining, unexpected failures, wrong methods and the served OpenAPI."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from oversync_sa.server import ServiceState, SyncService
from tests.http.http_support import app_client, headers, make_app, uid

Client = httpx.AsyncClient


async def test_lifespan_bootstraps_and_closes(service: SyncService) -> None:
    app = make_app(service)
    async with app.lifespan():
        assert service.state is ServiceState.RUNNING
    assert service.state is ServiceState.CLOSED


async def test_shutting_down_answers_503(client: Client, service: SyncService) -> None:
    async with service.operation():
        closing = asyncio.create_task(service.close())
        await asyncio.sleep(0)
        assert service.state is ServiceState.SHUTTING_DOWN
        calls = [
            client.post("/sync/connect", json={}, headers=headers()),
            client.post("/sync/push-sessions",
                        json={"source_bundle_id": 1, "planned_row_count": 1}, headers=headers()),
            client.post(f"/sync/push-sessions/{uid(1)}/commit", headers=headers()),
            client.delete(f"/sync/push-sessions/{uid(1)}", headers=headers()),
            client.get("/sync/committed-bundles/1/rows", headers=headers()),
            client.get("/sync/pull", headers=headers()),
            client.post("/sync/snapshot-sessions", headers=headers()),
            client.get(f"/sync/snapshot-sessions/{uid(1)}", headers=headers()),
            client.delete(f"/sync/snapshot-sessions/{uid(1)}", headers=headers()),
        ]
        for call in calls:
            resp = await call
            assert resp.status_code == 503, resp.text
            assert resp.json() == {
                "error": "service_unavailable", "message": "Sync service is shutting down"
            }
        health = await client.get("/syncx/health")
        assert health.status_code == 503
        assert health.json()["lifecycle"] == "shutting_down"
        status = await client.get("/syncx/status")
        assert status.status_code == 200
        assert status.json()["accepting_operations"] is False
        caps = await client.get("/sync/capabilities", headers=headers())
        assert caps.status_code == 200
    await closing


async def _boom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("database exploded: secret detail")


@pytest.mark.parametrize(
    ("target", "method", "path", "code"),
    [
        ("connect", "POST", "/sync/connect", "connect_failed"),
        ("create_push_session", "POST", "/sync/push-sessions", "push_session_create_failed"),
        ("upload_push_chunk", "POST", f"/sync/push-sessions/{uid(1)}/chunks",
         "push_chunk_failed"),
        ("commit_push_session", "POST", f"/sync/push-sessions/{uid(1)}/commit",
         "push_session_commit_failed"),
        ("delete_push_session", "DELETE", f"/sync/push-sessions/{uid(1)}",
         "push_session_delete_failed"),
        ("committed_bundle_rows", "GET", "/sync/committed-bundles/1/rows",
         "committed_bundle_rows_failed"),
        ("pull_encoded", "GET", "/sync/pull", "pull_failed"),
        ("create_snapshot_session", "POST", "/sync/snapshot-sessions",
         "snapshot_session_create_failed"),
        ("snapshot_chunk_encoded", "GET", f"/sync/snapshot-sessions/{uid(1)}",
         "snapshot_chunk_failed"),
        ("delete_snapshot_session", "DELETE", f"/sync/snapshot-sessions/{uid(1)}",
         "snapshot_session_delete_failed"),
        ("status", "GET", "/syncx/status", "status_failed"),
        ("health", "GET", "/syncx/health", "health_failed"),
    ],
)
async def test_unexpected_errors_become_the_route_failure_code(
    client: Client, monkeypatch: pytest.MonkeyPatch, target: str, method: str, path: str,
    code: str,
) -> None:
    # The routes call the SyncService facade: make its method fail unexpectedly.
    monkeypatch.setattr(SyncService, target, _boom)
    bodies: dict[str, dict[str, Any]] = {
        "upload_push_chunk": {"start_row_ordinal": 0, "rows": []},
        "create_push_session": {"source_bundle_id": 1, "planned_row_count": 1},
        "connect": {},
    }
    kwargs: dict[str, Any] = {"json": bodies[target]} if target in bodies else {}
    resp = await client.request(method, path, headers=headers(), **kwargs)
    assert resp.status_code == 500
    assert resp.json()["error"] == code
    assert "secret detail" not in resp.text


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/sync/pull", "GET"),
        ("GET", "/sync/connect", "POST"),
        ("PUT", "/sync/capabilities", "GET"),
        ("POST", "/syncx/health", "GET"),
    ],
)
async def test_wrong_method_is_405(client: Client, method: str, path: str, allow: str) -> None:
    resp = await client.request(method, path, headers=headers())
    assert resp.status_code == 405
    assert allow in resp.headers["allow"]
    if path.startswith("/sync/"):
        assert resp.json()["error"] == "method_not_allowed"


async def test_watch_route_is_mounted(client: Client) -> None:
    resp = await client.get("/sync/watch?after_bundle_seq=-1", headers=headers())
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"
    uninitialized = await client.get("/sync/watch", headers=headers("nobody"))
    assert uninitialized.status_code == 409


async def test_watch_policy_applies_to_capabilities_and_watch(service: SyncService) -> None:
    app = make_app(service, watch_policy=lambda actor: actor.user_id != "blocked")
    async with app_client(app) as client:
        caps = (await client.get("/sync/capabilities", headers=headers("blocked"))).json()
        assert caps["features"]["bundle_change_watch"] is False
        open_caps = (await client.get("/sync/capabilities", headers=headers("fine"))).json()
        assert open_caps["features"]["bundle_change_watch"] is True
        resp = await client.get("/sync/watch", headers=headers("blocked"))
        assert resp.status_code == 403
        assert resp.json()["error"] == "bundle_change_watch_forbidden"


async def test_openapi_lists_the_contract_operations(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    expected = {
        "/sync/connect": {"post": {"200", "400", "401", "500", "503"}},
        "/sync/push-sessions": {"post": {"200", "400", "409", "410", "500"}},
        "/sync/push-sessions/{push_id}/chunks": {"post": {"200", "403", "404", "409", "410"}},
        "/sync/push-sessions/{push_id}/commit": {"post": {"200", "400", "403", "404", "409"}},
        "/sync/push-sessions/{push_id}": {"delete": {"204", "403", "404", "410", "500"}},
        "/sync/committed-bundles/{bundle_seq}/rows": {"get": {"200", "400", "404", "409"}},
        "/sync/pull": {"get": {"200", "400", "409", "500"}},
        "/sync/snapshot-sessions": {"post": {"200", "400", "409", "500"}},
        "/sync/snapshot-sessions/{snapshot_id}": {
            "get": {"200", "400", "403", "404", "410"}, "delete": {"204", "403", "404"}},
        "/sync/capabilities": {"get": {"200"}},
        "/syncx/health": {"get": {"200", "503"}},
        "/syncx/status": {"get": {"200"}},
    }
    for path, methods in expected.items():
        assert path in paths, path
        for method, statuses in methods.items():
            assert statuses <= set(paths[path][method]["responses"]), (path, method)
    components = set(schema["components"]["schemas"])
    assert {
        "ConnectResponse", "PushSessionCommitResponse", "PullResponse", "SnapshotSession",
        "CapabilitiesResponse", "StatusResponse", "ErrorResponse", "PushConflictResponse",
    } <= components
