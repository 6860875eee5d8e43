"""Set-based materialisation of a frozen snapshot (SERVER.md §6.3 create, step 6).

One ``INSERT ... SELECT`` copies every live row of the scope into ``sync.snapshot_session_rows``:
the registered tables are scanned in one ``UNION ALL``, joined with the live ``sync.row_state``
entries, numbered ``1..N`` in ``(table_id, key_bytes)`` byte order, and written, without a
single row passing through Python. The same statement counts both sides: a snapshot is only
valid when business tables and ``row_state`` agree exactly (fail closed, §11.16, §11.32), and
only when they do not does a second query find out which rows lack a partner.

Payloads are PostgreSQL's ``jsonb`` text of the row minus ``_sync_scope_id``, with non-null
``bytea`` values replaced by padded standard base64 in SQL (newlines from ``encode`` removed).
That is JSON-equal to Go's output, which is all clients rely on; the bytes differ from Go only
when a non-null bytea value is present: Go then re-serialises the whole object as compact
Go-canonical JSON (sorted keys, float64 numbers), while this keeps PostgreSQL's text (key order,
spacing, exact numerics). ``byte_count`` counts the bytes actually stored, as Go does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa._crashpoints import crash_point
from oversync_sa.errors import SnapshotSessionCreateFailedError
from oversync_sa.server.payload import SCOPE_COLUMN
from oversync_sa.server.runtime_info import RuntimeTable, SyncRuntime

__all__ = ["MaterializedSnapshot", "count_live_row_state", "materialize_snapshot_rows"]

_COUNT_LIVE_SQL: Final = text(
    "SELECT count(*) FROM sync.row_state WHERE user_pk = :user_pk AND deleted = FALSE"
)


@dataclass(frozen=True, slots=True)
class MaterializedSnapshot:
    """Totals of a materialised snapshot."""

    row_count: int
    byte_count: int


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _live_branch(
    table: RuntimeTable, runtime: SyncRuntime, quote: _Quote, *, payload: bool
) -> str:
    key = f"src.{quote(table.key_column)}"
    key_bytes = f"uuid_send({key})" if table.key_type == "uuid" else f"convert_to({key}, 'UTF8')"
    select = f"SELECT {table.table_id} AS table_id, {key_bytes} AS key_bytes"
    if payload:
        select += f", {_payload_json(table, runtime, quote)} AS payload"
    return (
        f"{select} FROM {quote(table.schema)}.{quote(table.table)} AS src "
        f"WHERE src.{quote(SCOPE_COLUMN)} = :user_id"
    )


def _payload_json(table: RuntimeTable, runtime: SyncRuntime, quote: _Quote) -> str:
    payload = f"to_jsonb(src) - {_literal(SCOPE_COLUMN)}"
    binary = sorted(
        column
        for column, udt in runtime.column_types.get(table.name, {}).items()
        if udt == "bytea" and column != SCOPE_COLUMN
    )
    if binary:
        members = ", ".join(
            f"{_literal(c)}, translate(encode(src.{quote(c)}, 'base64'), E'\\n', '')"
            for c in binary
        )
        payload = f"({payload}) || jsonb_build_object({members})"
    # to_json(jsonb) keeps jsonb's text exactly and yields ``json`` without re-parsing it,
    # which a text -> json cast would do for every row.
    return f"to_json({payload})"


def _live_rows(runtime: SyncRuntime, quote: _Quote, *, payload: bool) -> str:
    tables = sorted(runtime.tables, key=lambda t: t.table_id)
    live = " UNION ALL ".join(_live_branch(t, runtime, quote, payload=payload) for t in tables)
    if not live:  # no registered tables: an empty, correctly typed relation
        live = "SELECT NULL::int AS table_id, NULL::bytea AS key_bytes"
        live += ", NULL::json AS payload WHERE FALSE" if payload else " WHERE FALSE"
    return live


def _live_count(runtime: SyncRuntime, quote: _Quote) -> str:
    counts = [
        f"(SELECT count(*) FROM {quote(t.schema)}.{quote(t.table)} "
        f"WHERE {quote(SCOPE_COLUMN)} = :user_id)"
        for t in runtime.tables
    ]
    return " + ".join(counts) if counts else "0"


class _Quote:
    """Identifier quoting of the connection's dialect (callable)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._prep = conn.dialect.identifier_preparer

    def __call__(self, name: str) -> str:
        return str(self._prep.quote(name))


# Only rows present on both sides are inserted (an inner join: no FULL JOIN result to
# materialise and rescan). Both sides are unique per (table_id, key_bytes) (business primary
# key, row_state primary key), so the inserted count equals both side counts exactly when every
# row matched; the scalar subqueries read those counts in the statement's own snapshot.
def _materialize_sql(runtime: SyncRuntime, quote: _Quote) -> str:
    return (
        f"WITH live AS ({_live_rows(runtime, quote, payload=True)}),"
        " ins AS (INSERT INTO sync.snapshot_session_rows"
        "  (snapshot_id, row_ordinal, table_id, key_bytes, bundle_seq, payload_wire)"
        "  SELECT :snapshot_id, row_number() OVER (ORDER BY l.table_id, l.key_bytes),"
        "  l.table_id, l.key_bytes, s.bundle_seq, l.payload"
        "  FROM live l JOIN sync.row_state s ON s.user_pk = :user_pk AND s.deleted = FALSE"
        "  AND s.table_id = l.table_id AND s.key_bytes = l.key_bytes"
        "  RETURNING octet_length(payload_wire::text) AS n)"
        " SELECT count(*) AS row_count, coalesce(sum(n), 0) AS byte_count,"
        "  (SELECT count(*) FROM sync.row_state"
        "   WHERE user_pk = :user_pk AND deleted = FALSE) AS state_count,"
        f"  ({_live_count(runtime, quote)}) AS live_count"
        " FROM ins"
    )


# Only run when the counts disagree (the transaction is about to roll back): which side lacks
# rows, and the first offending key, for the error message.
def _mismatch_sql(runtime: SyncRuntime, quote: _Quote) -> str:
    return (
        f"WITH live AS ({_live_rows(runtime, quote, payload=False)}),"
        " state AS (SELECT table_id, key_bytes FROM sync.row_state"
        "  WHERE user_pk = :user_pk AND deleted = FALSE),"
        " joined AS (SELECT coalesce(l.table_id, s.table_id) AS table_id,"
        "  coalesce(l.key_bytes, s.key_bytes) AS key_bytes,"
        "  l.table_id IS NOT NULL AS has_live, s.table_id IS NOT NULL AS has_state"
        "  FROM live l FULL JOIN state s"
        "  ON s.table_id = l.table_id AND s.key_bytes = l.key_bytes)"
        " SELECT count(*) FILTER (WHERE NOT has_state) AS missing_state,"
        "  count(*) FILTER (WHERE NOT has_live) AS missing_live,"
        "  (SELECT table_id::text || ':' || encode(key_bytes, 'hex') FROM joined"
        "   WHERE NOT (has_live AND has_state) ORDER BY table_id, key_bytes LIMIT 1) AS example"
        " FROM joined"
    )


async def count_live_row_state(conn: AsyncConnection, user_pk: int) -> int:
    """Live (non-deleted) ``row_state`` entries of a user: a cheap upper bound for row limits."""
    return int((await conn.execute(_COUNT_LIVE_SQL, {"user_pk": user_pk})).scalar_one())


async def materialize_snapshot_rows(
    conn: AsyncConnection,
    runtime: SyncRuntime,
    *,
    snapshot_id: uuid.UUID,
    user_id: str,
    user_pk: int,
) -> MaterializedSnapshot:
    """Copy the scope's live rows into the session; fail closed on any row_state mismatch.

    Must run in the snapshot-creation transaction (REPEATABLE READ) after the session row was
    inserted. Raises :class:`SnapshotSessionCreateFailedError` when a live business row has no
    live ``row_state`` entry or the other way round; the caller's rollback discards the rows.
    """
    quote = _Quote(conn)
    result = (
        await conn.execute(
            text(_materialize_sql(runtime, quote)),
            {"snapshot_id": snapshot_id, "user_id": user_id, "user_pk": user_pk},
        )
    ).one()
    if not result.row_count == result.state_count == result.live_count:
        found = (
            await conn.execute(
                text(_mismatch_sql(runtime, quote)), {"user_id": user_id, "user_pk": user_pk}
            )
        ).one()
        raise SnapshotSessionCreateFailedError(
            f"snapshot of user {user_id} is inconsistent: {found.missing_state} live row(s) "
            f"lack a live sync.row_state entry, {found.missing_live} live sync.row_state "
            f"entr(ies) lack a business row (first: table_id:key_hex {found.example}); "
            "repair sync.row_state or the business rows written around the sync triggers"
        )
    crash_point("server.snapshot.materialized")
    return MaterializedSnapshot(row_count=int(result.row_count), byte_count=int(result.byte_count))
