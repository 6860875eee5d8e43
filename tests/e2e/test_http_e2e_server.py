"""The reference server as a real process: uvicorn on a free port over a fresh database.

Drives the whole push/pull cycle over real HTTP, then stops the server with SIGTERM (it must
exit cleanly) and starts it again over the same database, which must resume where it stopped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oversync_sa.testing import PostgresServer
from tests._live_server import ServerProcess, free_port

SOURCE = "e2e-device"
JWT_SECRET = "e2e-secret-that-is-long-enough-for-hs256"


def _start(database_url: str, port: int, log: Path) -> ServerProcess:
    return ServerProcess(database_url, log, jwt_secret=JWT_SECRET, port=port, pool_max_conns=4)


@pytest.fixture
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    url = pg_server.create_database()
    try:
        yield url
    finally:
        pg_server.drop_database(url)


def _signin(client: httpx.Client, user: str) -> dict[str, str]:
    resp = client.post("/dummy-signin", json={"user": user, "password": "anything"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["expires_in"], body["user"]) == (300, user)
    return {"Authorization": f"Bearer {body['token']}", "Oversync-Source-ID": SOURCE}


def _push_one_user(client: httpx.Client, auth: dict[str, str], key: str) -> dict[str, Any]:
    create = client.post(
        "/sync/push-sessions", json={"source_bundle_id": 1, "planned_row_count": 1}, headers=auth
    )
    assert create.status_code == 200, create.text
    push_id = create.json()["push_id"]
    row = {
        "schema": "business", "table": "users", "key": {"id": key}, "op": "INSERT",
        "base_row_version": 0, "payload": {"id": key, "name": "Eve", "email": "eve@example.com"},
    }
    chunk = client.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": [row]},
        headers=auth,
    )
    assert chunk.status_code == 200, chunk.text
    commit = client.post(f"/sync/push-sessions/{push_id}/commit", headers=auth)
    assert commit.status_code == 200, commit.text
    return dict(commit.json())


def test_reference_server_round_trip_and_restart(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    server = _start(database_url, port, log)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            assert client.get("/sync/pull").status_code == 401  # plain-text JWT refusal
            auth = _signin(client, "e2e-user")
            connect = client.post(
                "/sync/connect", json={"has_local_pending_rows": False}, headers=auth
            )
            assert connect.json()["resolution"] == "initialize_empty"
            key = str(uuid.uuid4())
            committed = _push_one_user(client, auth, key)
            assert committed["bundle_seq"] == 1

            rows = client.get(f"/sync/committed-bundles/{committed['bundle_seq']}/rows",
                              headers=auth)
            assert rows.status_code == 200
            assert rows.json()["rows"][0]["key"] == {"id": key}
            assert rows.json()["bundle_hash"] == committed["bundle_hash"]

            pulled = client.get("/sync/pull", headers=auth).json()
            assert pulled["stable_bundle_seq"] == 1
            assert pulled["bundles"][0]["rows"][0]["payload"]["name"] == "Eve"
    finally:
        code = server.stop()
    assert code == 0, server.tail()

    restarted = _start(database_url, port, log)
    try:
        restarted.wait_ready()
        with httpx.Client(base_url=restarted.base_url, timeout=10) as client:
            auth = _signin(client, "e2e-user")
            pulled = client.get("/sync/pull", headers=auth).json()
            assert [b["bundle_seq"] for b in pulled["bundles"]] == [1]
    finally:
        assert restarted.stop() == 0, restarted.tail()
