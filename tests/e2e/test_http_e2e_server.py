"""The reference server as a real process: uvicorn on a free port over a fresh database.

Drives the whole push/pull cycle over real HTTP, then stops the server with SIGTERM (it must
exit cleanly) and starts it again over the same database, which must resume where it stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oversync_sa.testing import PostgresServer

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = "e2e-device"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ServerProcess:
    def __init__(self, database_url: str, port: int, log: Path) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "JWT_SECRET": "e2e-secret-that-is-long-enough-for-hs256",
            "OVERSYNC_DB_POOL_MAX_CONNS": "4",
            "OVERSYNC_DB_POOL_MIN_CONNS": "1",
        }
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "examples.litestar_server"],
                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/syncx/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"server not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return int(self.proc.returncode)


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
    port = _free_port()
    log = tmp_path / "server.log"
    server = _ServerProcess(database_url, port, log)
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
    assert code == 0, log.read_text()[-3000:]

    restarted = _ServerProcess(database_url, port, log)
    try:
        restarted.wait_ready()
        with httpx.Client(base_url=restarted.base_url, timeout=10) as client:
            auth = _signin(client, "e2e-user")
            pulled = client.get("/sync/pull", headers=auth).json()
            assert [b["bundle_seq"] for b in pulled["bundles"]] == [1]
    finally:
        assert restarted.stop() == 0, log.read_text()[-3000:]
