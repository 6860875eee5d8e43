"""Chunk-time type check of push payloads against the real column types (SERVER.md §5.2/§5.3).

Go stages any well-formed payload and lets PostgreSQL's input functions reject a wrong value
type (a string in an integer column, a number in a uuid column, a malformed timestamp) only at
commit, as an anonymous ``500 push_session_commit_failed``. The client cannot learn from that
which row or column is wrong, and retrying never helps.

Here every chunk's INSERT/UPDATE payloads go through the same conversion the commit uses
(``jsonb_populate_recordset`` over the table's row type) before they are staged, one statement
per table inside a savepoint, so a value PostgreSQL cannot convert is a ``400
push_chunk_invalid`` naming the table, the key and PostgreSQL's reason. Only type input is
checked here; NOT NULL, CHECK, unique and foreign-key rules stay commit-time (they depend on
the other rows of the bundle).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.errors import PushChunkInvalidError
from oversync_sa.server.locks import sqlstate_of
from oversync_sa.server.push_validation import StagedRow
from oversync_sa.server.runtime_info import RuntimeTable

__all__ = ["check_payload_types"]

#: SQLSTATE class 22 is "data exception": invalid input syntax, out-of-range values, bad
#: datetime fields... exactly what a wrong JSON value type produces.
_DATA_EXCEPTION_CLASS: Final = "22"


def _convert_sql(table: RuntimeTable) -> str:
    return (
        f"SELECT count(*) FROM jsonb_populate_recordset(NULL::{table.sql_name},"
        " CAST(:docs AS jsonb))"
    )


def _as_array(payloads: Sequence[bytes]) -> str:
    return "[" + ",".join(p.decode("utf-8") for p in payloads) + "]"


async def _converts(conn: AsyncConnection, sql: str, payloads: Sequence[bytes]) -> str | None:
    """``None`` if every payload converts, else PostgreSQL's message for the failure."""
    try:
        async with conn.begin_nested():
            await conn.execute(text(sql), {"docs": _as_array(payloads)})
    except DBAPIError as exc:
        code = sqlstate_of(exc) or ""
        if not code.startswith(_DATA_EXCEPTION_CLASS):
            raise
        return str(getattr(exc, "orig", exc)).splitlines()[0]
    return None


async def check_payload_types(conn: AsyncConnection, rows: Sequence[StagedRow]) -> None:
    """Raise :class:`PushChunkInvalidError` for the first row PostgreSQL cannot convert.

    One statement per table on the happy path; only when a table's batch fails are its rows
    re-checked one by one, to name the offending key.
    """
    by_table: dict[str, list[StagedRow]] = defaultdict(list)
    for row in rows:
        if row.payload is not None:
            by_table[row.table.name].append(row)
    for table_rows in by_table.values():
        table = table_rows[0].table
        sql = _convert_sql(table)
        if await _converts(conn, sql, [r.payload for r in table_rows if r.payload]) is None:
            continue
        for row in table_rows:
            if row.payload is None:
                continue
            reason = await _converts(conn, sql, [row.payload])
            if reason is not None:
                raise PushChunkInvalidError(
                    f"payload for {table.name} key {row.key!r} has a value PostgreSQL cannot"
                    f" convert to the column type: {reason}"
                )
