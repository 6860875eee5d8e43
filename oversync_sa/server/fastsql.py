"""Hot-path statements sent to asyncpg directly, with SQLAlchemy's results and errors.

Measured on the benchmark machine, one statement through SQLAlchemy's asyncio layer
(``AsyncConnection.execute`` of a cached ``text()``: greenlet hand-off, execution context,
cursor and result objects) costs about 240 µs of server CPU against about 110 µs for the same
statement on the asyncpg connection underneath, and a sync request runs four or five of them.
:func:`execute` is a stand-in for ``await conn.execute(statement, params)`` for the protocol's
own statements on the request path: the statement is compiled once for the connection's
dialect (SQLAlchemy still does the ``:name`` -> ``$n`` rendering) and sent with asyncpg's
``fetch``; the rows come back in a :class:`Rows` with the handful of ``Result`` methods the
callers use. Parameters and rows are exactly what SQLAlchemy's asyncpg dialect would pass and
return for a ``text()`` without typed binds: it hands the same values to the same asyncpg
prepared-statement call, and the JSON codecs it installs are on the asyncpg connection itself.

It goes straight to asyncpg only when that cannot change which transaction the statement runs
in: the asyncpg connection is inside a transaction (whoever began it), or the SQLAlchemy
connection is in AUTOCOMMIT mode. Otherwise (a SQLAlchemy transaction whose ``BEGIN`` the
dialect has not sent yet), and for a statement that needs SQLAlchemy's bind processing
(expanding or typed binds), it is ``conn.execute`` itself.

Errors are SQLAlchemy's: an asyncpg error is translated by the dialect's own table and wrapped
like ``conn.execute`` would (``IntegrityError``, ``ProgrammingError``, ... with the driver error
as ``orig`` and its cause, parameters hidden under the engine's ``hide_parameters``), and a
connection whose driver connection died under the statement is invalidated. What this path
does not do: run the engine's ``handle_error`` and cursor-execute event listeners (so
``echo=True`` does not show these statements), recycle the whole pool on a disconnect (each
pooled connection fails once after a PostgreSQL restart), or invalidate on a cancellation or
timeout (:func:`~oversync_sa.server.locks.user_transaction` discards a connection whose state
it cannot tell). Statements use asyncpg's own statement cache, not the dialect's
``prepared_statement_cache_size``; behind a transaction-pooling pgbouncer, give asyncpg
``statement_cache_size=0`` as well (``connect_args``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, NoReturn

from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause

__all__ = ["Rows", "driver", "execute", "mapping", "run"]

#: Statement -> (SQL for asyncpg, parameter names in ``$n`` order), or ``None``: use SQLAlchemy.
_compiled: Final[weakref.WeakKeyDictionary[TextClause, tuple[str, tuple[str, ...]] | None]] = (
    weakref.WeakKeyDictionary()
)


class Rows:
    """The rows of one statement, with the ``Result`` methods the server's callers use."""

    __slots__ = ("_rows",)

    def __init__(self, rows: Sequence[Any]) -> None:
        self._rows = rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> Sequence[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.first()

    def one(self) -> Any:
        if not self._rows:
            raise NoResultFound("No row was found when one was required")
        return self.one_or_none()

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]


async def driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``.

    Read through the checked-out connection's attributes, without the greenlet hop of
    ``AsyncConnection.get_raw_connection()``; an invalidated ``conn`` takes that call, which
    reconnects.
    """
    if conn.invalidated:
        return (await conn.get_raw_connection()).driver_connection
    return conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]


def mapping(row: Any) -> Mapping[str, Any]:
    """Columns by name of a row from :func:`execute` (a ``Record`` is its own mapping)."""
    return getattr(row, "_mapping", row)  # type: ignore[no-any-return]


def _compile(statement: TextClause, conn: AsyncConnection) -> tuple[str, tuple[str, ...]] | None:
    compiled = statement.compile(dialect=conn.dialect)
    if (
        compiled.positiontup is None
        or compiled.literal_execute_params
        or compiled.post_compile_params
        or compiled._bind_processors
    ):
        return None
    return compiled.string, tuple(compiled.positiontup)


async def execute(
    conn: AsyncConnection, statement: TextClause, params: Mapping[str, Any] | None = None
) -> Rows:
    """``await conn.execute(statement, params)`` on the request path (see the module docstring).

    The rows are asyncpg ``Record`` s, or SQLAlchemy ``Row`` s when SQLAlchemy ran the statement:
    both index by position; read columns by name through :func:`mapping`.
    """
    try:
        prepared = _compiled[statement]
    except KeyError:
        prepared = _compiled[statement] = _compile(statement, conn)
    if prepared is None or conn.invalidated:
        return await _through_sqlalchemy(conn, statement, params)
    adapter = conn.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    driver = adapter.driver_connection  # type: ignore[union-attr]
    if not (driver.is_in_transaction() or adapter.autocommit):  # type: ignore[union-attr]
        return await _through_sqlalchemy(conn, statement, params)
    sql, names = prepared
    values = [params[name] for name in names] if params else []
    try:
        return Rows(await driver.fetch(sql, *values))
    except Exception as exc:
        await _raise_translated(conn, driver, exc, sql, values)


async def _through_sqlalchemy(
    conn: AsyncConnection, statement: TextClause, params: Mapping[str, Any] | None
) -> Rows:
    result = await conn.execute(statement, params or {})
    return Rows(result.all() if result.returns_rows else ())


async def run(conn: AsyncConnection, sql: str) -> None:
    """A statement without parameters (``COMMIT``) on the driver connection, as
    ``await conn.exec_driver_sql(sql)`` would run it outside a SQLAlchemy transaction."""
    connection = await driver(conn)
    try:
        await connection.execute(sql)
    except Exception as exc:
        await _raise_translated(conn, connection, exc, sql, [])


async def _raise_translated(
    conn: AsyncConnection, driver: Any, exc: Exception, sql: str, values: list[Any]
) -> NoReturn:
    dbapi = conn.dialect.loaded_dbapi
    translate = getattr(dbapi, "_asyncpg_error_translate", {})
    translated: Exception = exc
    for kind in type(exc).__mro__:
        if kind in translate:
            translated = translate[kind](exc.args[0] if exc.args else str(exc), exc)
            translated.__cause__ = exc
            break
    invalidated = bool(driver.is_closed())
    if invalidated:
        # SQLAlchemy invalidates a connection whose driver connection died under a statement.
        await conn.invalidate(translated)
    if translated is exc:
        raise exc
    raise DBAPIError.instance(
        sql,
        values,
        translated,
        dbapi.Error,
        hide_parameters=conn.sync_engine.hide_parameters,
        connection_invalidated=invalidated,
        dialect=conn.dialect,
        ismulti=False,
    ) from translated
