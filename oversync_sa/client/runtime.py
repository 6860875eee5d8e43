"""The per-client context shared by lifecycle, push, pull and snapshot code.

:class:`ClientRuntime` bundles what every sync operation needs: the SQLite engine, the
configuration, the validated managed schema, the transport, and the in-memory session fields of
CLIENT.md §4.1 (source id, user id, connected flag, pending initialization id, pause flags). It
also enforces the two concurrency rules of §4.1:

* **one live client per database per process** (:class:`OwnershipRegistry`,
  :class:`~oversync_sa.client.errors.DatabaseAlreadyOwnedError`);
* **one operation at a time per client**, acquired without waiting
  (:meth:`ClientRuntime.operation`,
  :class:`~oversync_sa.client.errors.SyncOperationInProgressError`).

Durable state lives in the ``_sync_*`` tables and is read/written by
:mod:`oversync_sa.client.state`; this module holds only process memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import await_only

from oversync_sa.client.config import ClientConfig
from oversync_sa.client.counters import ClientCounters
from oversync_sa.client.driver import worker_submitter
from oversync_sa.client.errors import (
    ClientClosedError,
    DatabaseAlreadyOwnedError,
    SyncOperationInProgressError,
)
from oversync_sa.client.local_schema import fetch_all
from oversync_sa.client.results import PushTransferStats
from oversync_sa.client.transport import SyncTransport
from oversync_sa.client.validation import ManagedSchema

if TYPE_CHECKING:
    # conflicts imports this module; the resolver type is only needed for annotations.
    from oversync_sa.client.conflicts import ConflictResolver

__all__ = [
    "ClientRuntime",
    "OneShotHooks",
    "OwnershipRegistry",
    "database_identity",
    "prepare_engine",
]

_log = logging.getLogger("oversync_sa.client.runtime")

#: A one-shot test hook (§10.4): awaited once at its point, then cleared. Freeze hooks receive
#: the connection of the freeze transaction; the others receive ``None``.
Hook = Callable[[AsyncConnection | None], Awaitable[None]]

_PREPARED_FLAG: Final = "oversync_sa_prepared"
#: ``PRAGMA cache_size`` for client connections: negative means KiB, so this is 64 MiB.
CACHE_SIZE_PRAGMA: Final = -65536
_CONFIGURED_FLAG: Final = "oversync_sa_configured"


def prepare_engine(engine: AsyncEngine) -> AsyncEngine:
    """Give ``engine`` the transaction semantics the client relies on (idempotent).

    Python's ``sqlite3`` opens transactions lazily (only before DML), so PRAGMAs such as
    ``defer_foreign_keys`` would run outside the transaction they must affect. We switch the
    driver to autocommit and emit an explicit ``BEGIN`` whenever SQLAlchemy begins, the recipe
    from SQLAlchemy's SQLite documentation. ``foreign_keys`` and WAL are per connection and can
    only change outside a transaction, so they are set when each connection is created.
    """
    sync_engine = engine.sync_engine
    if getattr(sync_engine, _PREPARED_FLAG, False):
        return engine
    if sync_engine.dialect.name != "sqlite":
        raise ValueError(f"the oversync client needs SQLite, got {sync_engine.dialect.name}")

    def _configure(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            # Capture writes several index entries per row into the _sync_* tables; with
            # SQLite's default 2 MiB cache a large offline transaction spills dirty pages to the
            # WAL midway and capture stops being linear (benchmarks/README.md). 64 MiB is an
            # upper bound, not an allocation: pages are only used as needed.
            cursor.execute(f"PRAGMA cache_size={CACHE_SIZE_PRAGMA}")
        finally:
            cursor.close()
        record.info[_CONFIGURED_FLAG] = True

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        _configure(dbapi_connection, record)

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # Connections pooled before the engine was prepared (e.g. by the application's own
        # ``create_all``) never saw the connect hook: without this they would run in the
        # driver's legacy transaction mode, without WAL and without foreign keys.
        if not record.info.get(_CONFIGURED_FLAG):
            _configure(dbapi_connection, record)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Every client transaction starts here: one hop to aiosqlite's thread instead of the
        # three (cursor, execute, close) of exec_driver_sql.
        found = worker_submitter(connection.connection.driver_connection)
        if found is None:
            connection.exec_driver_sql("BEGIN")
            return
        submit, sqlite_connection = found
        try:
            await_only(submit(lambda: sqlite_connection.execute("BEGIN").close()))
        except sqlite3.Error as exc:
            raise DBAPIError.instance("BEGIN", None, exc, sqlite3.Error) from exc

    setattr(sync_engine, _PREPARED_FLAG, True)
    return engine


async def database_identity(conn: AsyncConnection) -> str:
    """The process-wide ownership key of the database behind ``conn`` (§4.1).

    In-memory databases get a key unique to the connection; file paths are made absolute and
    symlink-resolved so two spellings of one file collide; ``file:`` URIs are used as given.
    """
    rows = await fetch_all(conn, "PRAGMA database_list")
    path = next((str(row[2] or "") for row in rows if row[1] == "main"), "")
    if not path:
        return f"sqlite:memory:{id(conn.sync_connection)}"
    if path.startswith("file:"):
        return f"sqlite:{path}"
    return f"sqlite:{_resolve_path(path)}"


def _resolve_path(path: str) -> str:
    # Cheap, local filesystem metadata calls; not worth a thread hop.
    return os.path.realpath(os.path.abspath(path))


class OwnershipRegistry:
    """Process-wide set of databases owned by a live client (thread-safe)."""

    def __init__(self) -> None:
        self._owned: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, key: str) -> None:
        """Mark ``key`` owned; :class:`DatabaseAlreadyOwnedError` if another client holds it."""
        with self._lock:
            if key in self._owned:
                raise DatabaseAlreadyOwnedError(key.removeprefix("sqlite:"))
            self._owned.add(key)

    def release(self, key: str) -> None:
        """Forget ``key`` (no-op when not owned)."""
        with self._lock:
            self._owned.discard(key)

    def owned(self, key: str) -> bool:
        with self._lock:
            return key in self._owned


#: The registry every client of this process uses.
OWNERSHIP: Final = OwnershipRegistry()


@dataclass(slots=True)
class OneShotHooks:
    """Test hooks of §10.4; :meth:`take` returns a hook and clears it so it runs only once."""

    before_push_freeze: Hook | None = None
    before_push_commit: Hook | None = None
    before_push_replay: Hook | None = None

    def take(self, name: str) -> Hook | None:
        hook: Hook | None = getattr(self, name)
        setattr(self, name, None)
        return hook


@dataclass(slots=True)
class ClientRuntime:
    """Everything one client's operations share (see the module docstring).

    ``source_id`` is the in-memory copy of ``_sync_attachment_state.current_source_id`` (empty
    until ``open()``); ``user_id`` is the attached user of a connected session; the transport
    reads ``source_id`` for its ``Oversync-Source-ID`` header on every request.

    ``resolver`` decides push conflicts (``None`` = server wins) and ``push_stats`` accumulates
    push diagnostics; ``push_pending`` uses both unless its caller passes its own.
    ``counters`` tallies successful pushes, pulls, rebuilds and resolved conflicts (in memory).
    """

    engine: AsyncEngine
    config: ClientConfig
    managed: ManagedSchema
    transport: SyncTransport
    ownership_key: str
    source_id: str = ""
    user_id: str = ""
    session_connected: bool = False
    pending_initialization_id: str = ""
    uploads_paused: bool = False
    downloads_paused: bool = False
    closed: bool = False
    hooks: OneShotHooks = field(default_factory=OneShotHooks)
    resolver: ConflictResolver | None = None
    push_stats: PushTransferStats = field(default_factory=PushTransferStats)
    counters: ClientCounters = field(default_factory=ClientCounters)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _current: str = ""

    @property
    def schema(self) -> str:
        """The server schema all sync state belongs to (``config.schema``)."""
        return self.config.schema

    @asynccontextmanager
    async def operation(self, name: str) -> AsyncIterator[None]:
        """Hold the client's operation lock for ``name``; never waits (§4.1).

        Raises :class:`ClientClosedError` after close, :class:`SyncOperationInProgressError`
        while another operation runs.
        """
        if self.closed:
            raise ClientClosedError()
        if self._lock.locked():
            raise SyncOperationInProgressError(self._current)
        async with self._lock:
            if self.closed:
                raise ClientClosedError()
            self._current = name
            try:
                yield
            finally:
                self._current = ""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One SQLite transaction (``BEGIN`` ... ``COMMIT``; rolled back on error)."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def closing(self) -> AsyncIterator[None]:
        """Wait for a running operation, then mark the client closed and release ownership.

        ``close()`` is the one call that waits for the lock: it must not leave an operation
        half-done, and a second ``close()`` is a no-op.
        """
        async with self._lock:
            try:
                yield
            finally:
                if not self.closed:
                    self.closed = True
                    OWNERSHIP.release(self.ownership_key)
                    self.session_connected = False

    def disconnect(self) -> None:
        """Forget the in-memory session (after detach, lease loss, or a durable reset)."""
        self.user_id = ""
        self.pending_initialization_id = ""
        self.session_connected = False
