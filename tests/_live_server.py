"""The reference server (``python -m examples.litestar_server``) as a real child process.

Shared by the live-server tests: uvicorn on a free port over a given PostgreSQL database,
readiness by polling ``/syncx/health``, and ``stop()`` by SIGTERM (the exit code is the
caller's to check: a clean shutdown exits 0).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

__all__ = ["REPO_ROOT", "ServerProcess", "free_port"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """The reference server as a child process; ``stop()`` sends SIGTERM and waits.

    ``port`` defaults to a free one; pass the same port again to restart a server in place.
    ``env`` adds to (or overrides) the child's environment.
    """

    def __init__(
        self,
        database_url: str,
        log: Path,
        *,
        jwt_secret: str,
        port: int | None = None,
        pool_max_conns: int = 8,
        env: dict[str, str] | None = None,
    ) -> None:
        if port is None:
            port = free_port()
        child_env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "JWT_SECRET": jwt_secret,
            "OVERSYNC_DB_POOL_MAX_CONNS": str(pool_max_conns),
            "OVERSYNC_DB_POOL_MIN_CONNS": "1",
            **(env or {}),
        }
        self.log = log
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "examples.litestar_server"],
                cwd=REPO_ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT,
            )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited early:\n{self.tail()}")
            try:
                if httpx.get(f"{self.base_url}/syncx/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"server not ready:\n{self.tail()}")

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
