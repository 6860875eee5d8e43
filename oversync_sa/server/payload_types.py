"""Chunk-time type check of push payloads against the real column types (SERVER.md §5.2/§5.3).

Go stages any well-formed payload and lets PostgreSQL's input functions reject a wrong value
type (a string in an integer column, a number in a uuid column, a malformed timestamp) only at
commit, as an anonymous ``500 push_session_commit_failed``. The client cannot learn from that
which row or column is wrong, and retrying never helps.

Here every chunk's INSERT/UPDATE payloads go through the same conversion the commit uses
(``jsonb_populate_recordset`` over the table's row type) before they are staged, so a value
PostgreSQL cannot convert is a ``400 push_chunk_invalid`` naming the table, the key and
PostgreSQL's reason. Only type input is checked here; NOT NULL, CHECK, unique and foreign-key
rules stay commit-time (they depend on the other rows of the bundle).

The happy path costs no round trip of its own: :func:`conversion_checks` gives CTEs and a guard
that the chunk's staging statement carries (one conversion per table). A failed conversion
fails that statement and aborts the chunk's transaction, so the caller raises
:class:`PayloadTypesRejected` to roll it back and then names the offending row with
:func:`explain_rejected_payloads` on a connection of its own: table by table in order, then row
by row within the first table that fails, each in a savepoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Final, NoReturn

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from oversync_sa.errors import PushChunkInvalidError
from oversync_sa.server.locks import sqlstate_of
from oversync_sa.server.push_validation import StagedRow
from oversync_sa.server.runtime_info import RuntimeTable

__all__ = [
    "PayloadTypesRejected",
    "conversion_checks",
    "conversion_params",
    "data_exception_reason",
    "explain_rejected_payloads",
    "payload_groups",
]

#: SQLSTATE class 22 is "data exception": invalid input syntax, out-of-range values, bad
#: datetime fields... exactly what a wrong JSON value type produces.
_DATA_EXCEPTION_CLASS: Final = "22"

#: Rows with a payload, grouped by table in first-appearance order.
PayloadGroups = tuple[tuple[RuntimeTable, tuple[StagedRow, ...]], ...]


def _convert_sql(table: RuntimeTable) -> str:
    return (
        f"SELECT count(*) FROM jsonb_populate_recordset(NULL::{table.sql_name},"
        " CAST(:docs AS jsonb))"
    )


def _as_array(payloads: Sequence[bytes]) -> str:
    return "[" + ",".join(p.decode("utf-8") for p in payloads) + "]"


def payload_groups(rows: Sequence[StagedRow]) -> PayloadGroups:
    """The INSERT/UPDATE rows of a chunk by table, tables in order of first appearance."""
    by_table: dict[str, list[StagedRow]] = {}
    for row in rows:
        if row.payload is not None:
            by_table.setdefault(row.table.name, []).append(row)
    return tuple((group[0].table, tuple(group)) for group in by_table.values())


@lru_cache(maxsize=256)
def conversion_checks(tables: tuple[RuntimeTable, ...]) -> tuple[str, str]:
    """``(CTEs, guard)`` converting ``:docs<i>`` to table ``i``'s row type.

    The CTEs (each followed by a comma) go into a ``WITH`` list; the guard is a condition that is
    always true but references every CTE, so PostgreSQL has to evaluate them (an unreferenced
    SELECT CTE is never run). Empty strings when no table needs a check.
    """
    ctes = "".join(
        f"conv{i} AS (SELECT count(*) AS n FROM jsonb_populate_recordset("
        f"NULL::{table.sql_name}, CAST(:docs{i} AS jsonb))), "
        for i, table in enumerate(tables)
    )
    guard = " AND ".join(f"(SELECT n FROM conv{i}) >= 0" for i in range(len(tables)))
    return ctes, guard


def conversion_params(groups: PayloadGroups) -> dict[str, str]:
    """The ``:docs<i>`` parameters of :func:`conversion_checks` for ``groups``."""
    return {
        f"docs{i}": _as_array([r.payload for r in group if r.payload])
        for i, (_, group) in enumerate(groups)
    }


class PayloadTypesRejected(Exception):
    """The staging statement failed with a data exception; its transaction is aborted.

    Not a wire error: the caller lets the transaction roll back, then turns this into
    :class:`PushChunkInvalidError` with :func:`explain_rejected_payloads`.
    """

    def __init__(self, groups: PayloadGroups, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.groups = groups
        self.error = error


def data_exception_reason(exc: DBAPIError) -> str | None:
    """PostgreSQL's first message line for a data exception (SQLSTATE class 22), else None."""
    code = sqlstate_of(exc) or ""
    if not code.startswith(_DATA_EXCEPTION_CLASS):
        return None
    return str(getattr(exc, "orig", exc)).splitlines()[0]


async def _converts(conn: AsyncConnection, sql: str, payloads: Sequence[bytes]) -> str | None:
    """``None`` if every payload converts, else PostgreSQL's message (inside a savepoint)."""
    try:
        async with conn.begin_nested():
            await conn.execute(text(sql), {"docs": _as_array(payloads)})
    except DBAPIError as exc:
        reason = data_exception_reason(exc)
        if reason is None:
            raise
        return reason
    return None


async def explain_rejected_payloads(
    engine: AsyncEngine, rejected: PayloadTypesRejected
) -> NoReturn:
    """Raise :class:`PushChunkInvalidError` for the first row PostgreSQL cannot convert.

    The first table whose batch fails has its rows re-checked one by one. The conversions
    touch no table; they run in savepoints of a fresh transaction after the chunk's own rolled
    back. If no payload fails alone, the staging statement failed for another reason and its
    error is raised again (a 500, as any unexpected staging failure).
    """
    async with engine.connect() as conn, conn.begin():
        for table, rows in rejected.groups:
            sql = _convert_sql(table)
            if await _converts(conn, sql, [r.payload for r in rows if r.payload]) is None:
                continue
            for row in rows:
                if row.payload is None:
                    continue
                reason = await _converts(conn, sql, [row.payload])
                if reason is not None:
                    raise PushChunkInvalidError(
                        f"payload for {table.name} key {row.key!r} has a value PostgreSQL"
                        f" cannot convert to the column type: {reason}"
                    )
    raise rejected.error
