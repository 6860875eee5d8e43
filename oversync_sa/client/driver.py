"""Run a batch of SQLite work on the driver's own thread in one hop (bulk apply paths).

Every ``exec_driver_sql`` on the client's engine is a round trip: SQLAlchemy Core, a greenlet
switch, a queue hop to aiosqlite's worker thread and back through the event loop - about a
third of a millisecond of CPU each, more than SQLite needs for a small statement. A pulled
bundle issues a dozen statements, so the hops alone cost as much as writing its rows.
:func:`run_on_driver` instead hands one plain function to the worker thread that owns the
``sqlite3`` connection and runs all of its statements there, inside the caller's transaction.

The function receives a DB-API cursor and must use only the portable cursor API (``execute``,
``executemany``, ``fetchall``, ``fetchone``, ``rowcount``): without aiosqlite (another async
SQLite driver) it runs through :meth:`AsyncConnection.run_sync` on SQLAlchemy's adapted
connection instead, one round trip per statement but the same results. Driver errors are
re-raised as the :class:`sqlalchemy.exc.DBAPIError` subclass ``exec_driver_sql`` would have
raised, so callers see one error type whichever way the statements ran.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["DriverWork", "run_on_driver", "worker_submitter"]

T = TypeVar("T")

#: Work for :func:`run_on_driver`: called with a DB-API cursor of the transaction's connection.
DriverWork = Callable[[Any], T]


def _with_cursor(dbapi_connection: Any, work: DriverWork[T]) -> T:
    cursor = dbapi_connection.cursor()
    try:
        return work(cursor)
    finally:
        cursor.close()


def worker_submitter(driver: Any) -> tuple[Callable[..., Any], sqlite3.Connection] | None:
    """aiosqlite's "run this callable on the worker thread" and its ``sqlite3`` connection.

    ``Connection._execute`` and ``_connection`` are private aiosqlite API, but stable; SQLAlchemy's
    own aiosqlite adapter reaches into the same worker queue to set ``isolation_level``.
    Anything that does not look like aiosqlite gets ``None`` (callers then take the slow path).
    """
    submit = getattr(driver, "_execute", None)
    connection = getattr(driver, "_connection", None)
    if submit is None or not isinstance(connection, sqlite3.Connection):
        return None
    return submit, connection


async def run_on_driver(conn: AsyncConnection, work: DriverWork[T]) -> T:
    """``work(cursor)`` on the thread that owns ``conn``'s SQLite connection, in one hop.

    ``conn`` must already be in a transaction (the statements join it; nothing is committed
    here). While ``work`` runs the event loop is free but nothing else may use ``conn``, which
    the client's operation lock guarantees.
    """
    raw = await conn.get_raw_connection()
    found = worker_submitter(raw.driver_connection)
    base_error: type[Exception] = conn.dialect.loaded_dbapi.Error
    try:
        if found is None:
            result: T = await conn.run_sync(
                lambda sync_conn: _with_cursor(sync_conn.connection.dbapi_connection, work)
            )
        else:
            submit, sqlite_connection = found
            result = await submit(_with_cursor, sqlite_connection, work)
    except base_error as exc:
        raise DBAPIError.instance(None, None, exc, base_error) from exc
    return result
