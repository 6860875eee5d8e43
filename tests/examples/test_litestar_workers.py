"""``python -m examples.litestar_server --workers N``: N processes, one port, one database.

Real processes throughout: the supervising parent, its workers and PostgreSQL. Checked: every
worker bootstraps against the same (empty) database, requests on fresh connections succeed
whichever worker takes them, a stop signal ends the whole group cleanly, and with
``DATABASE_URL`` unset the local PostgreSQL is started once, by the parent.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from oversync_sa.testing.postgres import find_bin_dir
from tests._live_server import REPO_ROOT, free_port

pytestmark = pytest.mark.postgres

SECRET = "workers-test-secret-that-is-long-enough"
STARTED = "Application startup complete"


#: The example's own entry point and the ``oversync-sa serve`` command run the same supervisor.
ENTRY_POINTS = {
    "example": [sys.executable, "-m", "examples.litestar_server"],
    "cli": [sys.executable, "-m", "oversync_sa.cli", "serve"],
}


def _start(
    tmp_path: Path, workers: int, database_url: str | None, entry: str = "example"
) -> tuple[subprocess.Popen[bytes], Path, str]:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "JWT_SECRET": SECRET,
        "OVERSYNC_DB_POOL_MAX_CONNS": "4",
        "OVERSYNC_DB_POOL_MIN_CONNS": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("DATABASE_URL", None)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*ENTRY_POINTS[entry], "--workers", str(workers)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    return proc, log, f"http://127.0.0.1:{port}"


def _wait_started(proc: subprocess.Popen[bytes], log: Path, workers: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        if log.read_bytes().count(STARTED.encode()) >= workers:
            return
        time.sleep(0.2)
    pytest.fail(f"workers not started:\n{log.read_text(errors='replace')[-4000:]}")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9
    return int(proc.returncode)


def _sync_round_trip(base_url: str, user: str, source: str) -> None:
    """Sign in, connect, push one row and pull it back, each on a fresh connection."""
    token = httpx.post(
        f"{base_url}/dummy-signin", json={"user": user, "password": "x"}
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}", "Oversync-Source-ID": source}
    connect = httpx.post(
        f"{base_url}/sync/connect", json={"has_local_pending_rows": False}, headers=headers
    )
    assert connect.status_code == 200, connect.text
    assert connect.json()["resolution"] == "initialize_empty"
    create = httpx.post(
        f"{base_url}/sync/push-sessions",
        json={"source_bundle_id": 1, "planned_row_count": 1}, headers=headers,
    )
    assert create.status_code == 200, create.text
    push_id = create.json()["push_id"]
    key = "00000000-0000-4000-8000-000000000001"
    row = {
        "schema": "business", "table": "users", "key": {"id": key}, "op": "INSERT",
        "base_row_version": 0, "payload": {"id": key, "name": "Ada", "email": "a@example.com"},
    }
    chunk = httpx.post(
        f"{base_url}/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": [row]}, headers=headers,
    )
    assert chunk.status_code == 200, chunk.text
    commit = httpx.post(f"{base_url}/sync/push-sessions/{push_id}/commit", headers=headers)
    assert commit.status_code == 200, commit.text
    pulled = httpx.get(f"{base_url}/sync/pull", headers=headers).json()
    assert pulled["stable_bundle_seq"] == commit.json()["bundle_seq"] == 1


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_two_workers_share_one_database_and_stop_together(
    pg_url: str, tmp_path: Path, entry: str
) -> None:
    proc, log, base_url = _start(tmp_path, 2, pg_url, entry)
    try:
        _wait_started(proc, log, 2)
        workers = _children(proc.pid)
        assert len(workers) == 2, log.read_text(errors="replace")[-4000:]
        # Fresh connections land on either worker; each user's first sync works on both.
        for n in range(6):
            _sync_round_trip(base_url, f"worker-user-{n}", f"device-{n}")
    finally:
        code = _stop(proc)
    text = log.read_text(errors="replace")
    assert code == 0, text[-4000:]
    assert "Traceback" not in text
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.skipif(
    find_bin_dir(allow_embedded=False) is None, reason="no PostgreSQL binaries (initdb) found"
)
def test_local_postgres_is_started_once_by_the_parent() -> None:
    # PostgreSQL runs as its service user when the tests run as root, and pytest's tmp_path
    # sits below a 0700 directory that user cannot traverse.
    base = Path(tempfile.mkdtemp(prefix="oversync-workers-test-"))
    base.chmod(0o711)
    tmp_path = base / "server"
    tmp_path.mkdir()
    try:
        _check_local_postgres_started_once(tmp_path)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _check_local_postgres_started_once(tmp_path: Path) -> None:
    proc, log, base_url = _start(tmp_path, 2, None)
    try:
        _wait_started(proc, log, 2)
        _sync_round_trip(base_url, "embedded-user", "device-1")
    finally:
        code = _stop(proc)
    text = log.read_text(errors="replace")
    assert code == 0, text[-4000:]
    assert text.count("started a local PostgreSQL") == 1, text[-4000:]
    assert text.count("stopped the local PostgreSQL") == 1, text[-4000:]
    assert (tmp_path / ".oversync" / "pgdata").is_dir()
