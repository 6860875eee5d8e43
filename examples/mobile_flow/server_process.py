"""The reference server (``python -m examples.litestar_server``) as a child process.

Used by the demo and the tests: start it on a free port, wait for ``/syncx/health``, find the
PostgreSQL it serves from (given, or the embedded cluster it started), stop it with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import httpx

__all__ = ["REPO_ROOT", "ServerProcess", "ServerStartError", "free_port"]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
EMBEDDED_DATABASE: Final = "clisync_example"
#: The server's embedded cluster lives at ``<cwd>/.oversync/pgdata`` (examples.litestar_server
#: has no variable for it yet), so choosing the working directory chooses the data directory.
EMBEDDED_SUBDIR: Final = Path(".oversync") / "pgdata"


class ServerStartError(RuntimeError):
    """The server exited or never became healthy; the message ends with its log tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One reference-server process.

    With ``database_url`` the server uses that database; without it the server starts its
    embedded PostgreSQL in ``<workdir>/.oversync/pgdata`` and :attr:`database_url` is read from
    that cluster's ``postmaster.pid`` (line 4 is the port, a PostgreSQL file-format fact).
    """

    def __init__(
        self,
        *,
        workdir: Path,
        log_path: Path,
        database_url: str | None = None,
        port: int | None = None,
        jwt_secret: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.log_path = log_path
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._given_url = database_url
        self._jwt_secret = jwt_secret
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / EMBEDDED_SUBDIR

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update(
            {
                "PORT": str(self.port),
                "HOST": "127.0.0.1",
                # the child runs outside the repository, so make ``examples`` importable
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])
                ),
                "OVERSYNC_DB_POOL_MAX_CONNS": env.get("OVERSYNC_DB_POOL_MAX_CONNS", "20"),
                "OVERSYNC_DB_POOL_MIN_CONNS": env.get("OVERSYNC_DB_POOL_MIN_CONNS", "2"),
            }
        )
        if self._given_url:
            env["DATABASE_URL"] = self._given_url
        if self._jwt_secret:
            env["JWT_SECRET"] = self._jwt_secret
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "examples.litestar_server"],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until ``/syncx/health`` answers 200 (the first embedded start runs ``initdb``)."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"server exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.base_url}/syncx/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise ServerStartError(f"server not healthy after {timeout:.0f}s:\n{self.log_tail()}")

    @property
    def database_url(self) -> str:
        if self._given_url:
            return self._given_url
        pid_file = self.data_dir / "postmaster.pid"
        try:
            port = int(pid_file.read_text().splitlines()[3])
        except (OSError, IndexError, ValueError) as exc:
            raise ServerStartError(f"cannot read the embedded PostgreSQL port: {exc}") from exc
        return f"postgresql://postgres@127.0.0.1:{port}/{EMBEDDED_DATABASE}"

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait (the server drains, then stops its PostgreSQL); returns the code."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return -9
        return int(proc.returncode)
