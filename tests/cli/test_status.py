"""``oversync-sa status``: against canned HTTP answers and a real server started by ``serve``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests._live_server import free_port
from tests.cli.conftest import Invoke

REPO_ROOT = Path(__file__).resolve().parents[2]


class _Canned(BaseHTTPRequestHandler):
    """Answers every GET with the status and body of ``server.answer``."""

    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        code, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


_UNHEALTHY = {
    "status": "unhealthy",
    "lifecycle": "shutting_down",
    "registered_tables": [],
    "features": {"bundle_pull": True},
    "future_member": 7,
}


def test_unhealthy_server_exits_1_and_shows_every_member(
    invoke: Invoke, canned: ThreadingHTTPServer
) -> None:
    canned.answer = (200, json.dumps(_UNHEALTHY))  # type: ignore[attr-defined]
    result = invoke(["status", _url(canned) + "/"])
    assert result.exit_code == 1
    assert canned.paths == ["/syncx/status"]  # type: ignore[attr-defined]
    for text in ("unhealthy", "shutting_down", "(none)", "bundle_pull: yes", "future_member"):
        assert text in result.stdout


def test_json_prints_the_body_as_received(invoke: Invoke, canned: ThreadingHTTPServer) -> None:
    raw = json.dumps(_UNHEALTHY, indent=3)
    canned.answer = (200, raw)  # type: ignore[attr-defined]
    result = invoke(["status", _url(canned), "--json"])
    assert result.exit_code == 1
    assert result.stdout == raw + "\n"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((404, "{}"), "answered 404: is this an oversync server?"),
        ((200, "<html>"), "answered 200 with a non-JSON body"),
        ((500, '{"error": "status_failed"}'), "answered 500 status_failed: not a sync status"),
        ((200, "[1, 2]"), "answered 200: not a sync status object"),
    ],
)
def test_bad_answers_exit_2(
    invoke: Invoke, canned: ThreadingHTTPServer, answer: tuple[int, str], message: str
) -> None:
    canned.answer = answer  # type: ignore[attr-defined]
    result = invoke(["status", _url(canned)])
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_unreachable_server_exits_2(invoke: Invoke) -> None:
    result = invoke(["status", f"http://127.0.0.1:{free_port()}", "--timeout", "2"])
    assert result.exit_code == 2
    assert "cannot reach http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://example.com", "http://"])
def test_non_http_url_is_a_usage_error(invoke: Invoke, url: str) -> None:
    result = invoke(["status", url])
    assert result.exit_code == 2
    assert "URL must be an http(s):// server address" in result.stderr


# ------------------------------------------------------------------ serve + status, for real


@pytest.mark.postgres
def test_serve_then_status_against_the_live_server(
    invoke: Invoke, pg_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "JWT_SECRET": "cli-test-secret-that-is-long-enough-for-hs256",
        "OVERSYNC_DB_POOL_MAX_CONNS": "4",
        "OVERSYNC_DB_POOL_MIN_CONNS": "1",
    }
    env.pop("DATABASE_URL", None)
    command = [
        sys.executable,
        "-m",
        "oversync_sa.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--database-url",
        pg_url,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/syncx/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

        table = invoke(["status", base])
        assert table.exit_code == 0, table.output
        assert "healthy" in table.stdout
        assert "nethttp-server-example" in table.stdout
        assert "business.users" in table.stdout

        raw = invoke(["status", base, "--json"])
        assert raw.exit_code == 0
        body = json.loads(raw.stdout)
        assert body["status"] == "healthy"
        assert body["lifecycle"] == "running"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()[-3000:]
    assert f"serving the sync API on http://127.0.0.1:{port}" in log.read_text()
