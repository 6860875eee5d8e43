"""``--workers N``: N server processes behind one listening socket, over one database.

The parent resolves the database once (starting the embedded PostgreSQL when ``DATABASE_URL`` is
unset, so there is exactly one cluster), binds ``HOST:PORT`` itself and starts N copies of
``python -m examples.litestar_server`` that inherit the bound socket and get the resolved URL in
``DATABASE_URL``. The kernel hands each new connection to whichever worker accepts it first, as
with ``uvicorn --workers``. Every worker is a complete server: its own pool, its own bootstrap
(concurrent bootstraps are serialised by the bootstrap advisory lock) and its own ``LISTEN``
connection, so a commit on one worker wakes watch streams on all of them (SERVER.md §7.4).

uvicorn's own ``workers=`` needs an import string and pickles the server object into each
child; spawning our own command keeps the draining server and the settings path unchanged.

A stop signal is forwarded to every worker (each drains, see :mod:`.serving`); the parent waits
for them, then stops the embedded PostgreSQL. If a worker dies on its own, the others are
stopped too and the parent exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import Final

from examples.litestar_server.database import open_database
from examples.litestar_server.serving import SHUTDOWN_GRACE_SECONDS
from examples.litestar_server.settings import Settings

__all__ = ["LISTEN_FD_ENV", "inherited_socket", "supervise"]

_log = logging.getLogger("examples.litestar_server.workers")

#: Set by the parent in each worker's environment: the inherited listening socket's fd.
LISTEN_FD_ENV: Final = "OVERSYNC_EXAMPLE_LISTEN_FD"
_BACKLOG: Final = 2048  # uvicorn's default


def inherited_socket() -> socket.socket | None:
    """The listening socket a supervising parent passed down, or ``None`` in a lone server."""
    text = os.environ.get(LISTEN_FD_ENV, "").strip()
    if not text:
        return None
    # socket(fileno=...) detects the family itself (the socket may be IPv4 or IPv6).
    return socket.socket(fileno=int(text))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _spawn(database_url: str, fd: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": database_url, LISTEN_FD_ENV: str(fd)}
    return subprocess.Popen(
        [sys.executable, "-m", "examples.litestar_server"], env=env, pass_fds=(fd,)
    )


async def supervise(settings: Settings, workers: int) -> int:
    """Run ``workers`` server processes until a stop signal; the exit code of the whole."""
    async with open_database(settings) as url:
        sock = _bind(settings.host, settings.port)
        try:
            procs = [_spawn(url, sock.fileno()) for _ in range(workers)]
        finally:
            # The workers hold their own copies; the parent never accepts.
            sock.close()
        _log.info(
            "started %d workers (pids %s) on http://%s:%d",
            workers, ", ".join(str(p.pid) for p in procs), settings.host, settings.port,
        )
        failed = await _wait_for_stop(procs)
        await _stop(procs)
    return 1 if failed else 0


async def _wait_for_stop(procs: list[subprocess.Popen[bytes]]) -> bool:
    """Until SIGINT/SIGTERM (False) or until a worker exits by itself (True)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            exited = [p for p in procs if p.poll() is not None]
            if exited:
                _log.error(
                    "worker %d exited with %s; stopping the others", exited[0].pid,
                    exited[0].returncode,
                )
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        return False
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    # Each worker gives in-flight requests the grace period; allow a little more before killing.
    deadline = SHUTDOWN_GRACE_SECONDS + 5
    for proc in procs:
        try:
            await asyncio.to_thread(proc.wait, deadline)
        except subprocess.TimeoutExpired:
            _log.warning("worker %d did not stop in %d s; killing it", proc.pid, deadline)
            proc.kill()
            await asyncio.to_thread(proc.wait)
