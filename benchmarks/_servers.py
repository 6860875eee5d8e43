"""The reference server as real child processes, for the HTTP benchmarks.

Two shapes:

* :class:`ServerProcess` - one ``python -m examples.litestar_server [--workers N]`` on a free
  loopback port. With ``workers > 1`` that is the server's own multi-worker mode (one port, the
  kernel spreads connections over the workers); :meth:`ServerProcess.worker_pids` finds them.
* :class:`ServerFleet` - N *independent* single-worker servers on N ports over the same
  database. Benchmarks that must know which worker served a request (a watch stream on worker
  A woken by a commit on worker B) pin each client to one of them.

Both read RSS and CPU time from ``/proc`` (Linux).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import httpx

if TYPE_CHECKING:
    from oversync_sa.testing import PostgresServer

__all__ = [
    "JWT_SECRET",
    "REPO_ROOT",
    "ServerFleet",
    "ServerProcess",
    "free_port",
    "proc_status_kib",
    "process_cpu_seconds",
    "serving",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
JWT_SECRET: Final = "http-load-benchmark-secret-of-32-bytes"
_READY_SECONDS: Final = 90.0


class _Server(Protocol):
    async def wait_ready(self) -> None: ...

    def tail(self) -> str: ...

    def stop(self) -> None: ...


_S = TypeVar("_S", bound=_Server)


@asynccontextmanager
async def serving(
    pg: PostgresServer, start: Callable[[str], _S]
) -> AsyncIterator[tuple[_S, str]]:
    """``start(database_url)`` over a fresh database, ready; ``(server, database_url)``.

    On any failure the server's log tail goes to stderr; the server is stopped and the database
    dropped on the way out.
    """
    database_url = pg.create_database()
    server = start(database_url)
    try:
        await server.wait_ready()
        yield server, database_url
    except BaseException:
        print(server.tail(), file=sys.stderr)
        raise
    finally:
        server.stop()
        pg.drop_database(database_url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status_kib(pid: int, field_name: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5), i.e. 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return sorted(found)


class ServerProcess:
    """The reference server as a child process on loopback; its log goes to a temp file."""

    def __init__(
        self,
        database_url: str,
        *,
        pool_max: int,
        pool_min: int = 5,
        workers: int = 1,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.workers = workers
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="bench_server_", suffix=".log")[1])
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "JWT_SECRET": JWT_SECRET,
            "OVERSYNC_DB_POOL_MAX_CONNS": str(pool_max),
            "OVERSYNC_DB_POOL_MIN_CONNS": str(min(pool_min, pool_max)),
            "PYTHONPATH": str(REPO_ROOT),
            **(extra_env or {}),
        }
        command = [sys.executable, "-m", "examples.litestar_server"]
        if workers > 1:
            command += ["--workers", str(workers)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    async def wait_ready(self) -> None:
        """Until every worker answers ``/syncx/health`` (a multi-worker server: all found)."""
        deadline = time.monotonic() + _READY_SECONDS
        async with httpx.AsyncClient(base_url=self.base_url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.tail()}")
                try:
                    healthy = (await client.get("/syncx/health")).status_code == 200
                except httpx.TransportError:
                    healthy = False
                # Every worker logs its own "Uvicorn running" / startup line once it serves.
                started = self.log.read_bytes().count(b"Application startup complete")
                if healthy and started >= self.workers:
                    return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"server not ready after {_READY_SECONDS:.0f} s:\n{self.tail()}")

    def worker_pids(self) -> list[int]:
        """The processes serving requests: the server itself, or its ``--workers`` children."""
        if self.workers == 1:
            return [self.proc.pid]
        return _children(self.proc.pid)

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.worker_pids())

    def rss_kib(self) -> int:
        return sum(proc_status_kib(pid, "VmRSS") for pid in self.worker_pids())

    def peak_rss_kib(self) -> int:
        return sum(proc_status_kib(pid, "VmHWM") for pid in self.worker_pids())

    def rss_by_worker_kib(self) -> dict[int, int]:
        return {pid: proc_status_kib(pid, "VmRSS") for pid in self.worker_pids()}

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)


class ServerFleet:
    """``count`` single-worker servers on their own ports over one database."""

    def __init__(self, database_url: str, count: int, *, pool_max: int, pool_min: int = 2):
        self.servers = [
            ServerProcess(database_url, pool_max=pool_max, pool_min=pool_min)
            for _ in range(count)
        ]

    @property
    def base_urls(self) -> list[str]:
        return [s.base_url for s in self.servers]

    async def wait_ready(self) -> None:
        await asyncio.gather(*(s.wait_ready() for s in self.servers))

    def rss_by_worker_kib(self) -> list[int]:
        return [s.rss_kib() for s in self.servers]

    def tail(self) -> str:
        return "\n".join(f"--- worker {i}:\n{s.tail()}" for i, s in enumerate(self.servers))

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
