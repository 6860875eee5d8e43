"""Set-based materialisation of a frozen snapshot (SERVER.md §6.3 create, step 6).

One ``INSERT ... SELECT`` copies every live row of the scope into ``sync.snapshot_session_rows``:
the registered tables are scanned in one ``UNION ALL``, full-joined with the live
``sync.row_state`` entries, numbered ``1..N`` in ``(table_id, key_bytes)`` byte order, and
written, without a single row passing through Python. The same statement reports how many rows
exist on only one side of the join: a snapshot is only valid when business tables and
``row_state`` agree exactly (fail closed, §11.16, §11.32).

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


def _live_branch(table: RuntimeTable, runtime: SyncRuntime, quote: _Quote) -> str:
    key = f"src.{quote(table.key_column)}"
    key_bytes = f"uuid_send({key})" if table.key_type == "uuid" else f"convert_to({key}, 'UTF8')"
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
    return (
        f"SELECT {table.table_id} AS table_id, {key_bytes} AS key_bytes, "
        f"({payload})::text AS payload "
        f"FROM {quote(table.schema)}.{quote(table.table)} AS src "
        f"WHERE src.{quote(SCOPE_COLUMN)} = :user_id"
    )


class _Quote:
    """Identifier quoting of the connection's dialect (callable)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._prep = conn.dialect.identifier_preparer

    def __call__(self, name: str) -> str:
        return str(self._prep.quote(name))


def _materialize_sql(runtime: SyncRuntime, quote: _Quote) -> str:
    tables = sorted(runtime.tables, key=lambda t: t.table_id)
    live = " UNION ALL ".join(_live_branch(t, runtime, quote) for t in tables)
    if not live:  # no registered tables: an empty, correctly typed relation
        live = "SELECT NULL::int AS table_id, NULL::bytea AS key_bytes, NULL::text AS payload "
        live += "WHERE FALSE"
    return (
        f"WITH live AS ({live}),"
        " state AS (SELECT table_id, key_bytes, bundle_seq FROM sync.row_state"
        "  WHERE user_pk = :user_pk AND deleted = FALSE),"
        " joined AS (SELECT coalesce(l.table_id, s.table_id) AS table_id,"
        "  coalesce(l.key_bytes, s.key_bytes) AS key_bytes, l.payload, s.bundle_seq,"
        "  l.table_id IS NOT NULL AS has_live, s.table_id IS NOT NULL AS has_state"
        "  FROM live l FULL JOIN state s"
        "  ON s.table_id = l.table_id AND s.key_bytes = l.key_bytes),"
        " ins AS (INSERT INTO sync.snapshot_session_rows"
        "  (snapshot_id, row_ordinal, table_id, key_bytes, bundle_seq, payload_wire)"
        "  SELECT :snapshot_id, row_number() OVER (ORDER BY table_id, key_bytes),"
        "  table_id, key_bytes, bundle_seq, payload::json"
        "  FROM joined WHERE has_live AND has_state"
        "  RETURNING octet_length(payload_wire::text) AS n)"
        " SELECT (SELECT count(*) FROM ins) AS row_count,"
        "  (SELECT coalesce(sum(n), 0) FROM ins) AS byte_count,"
        "  (SELECT count(*) FROM joined WHERE NOT has_state) AS missing_state,"
        "  (SELECT count(*) FROM joined WHERE NOT has_live) AS missing_live,"
        "  (SELECT table_id::text || ':' || encode(key_bytes, 'hex') FROM joined"
        "   WHERE NOT (has_live AND has_state) ORDER BY table_id, key_bytes LIMIT 1) AS example"
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
    sql = text(_materialize_sql(runtime, _Quote(conn)))
    result = (
        await conn.execute(
            sql, {"snapshot_id": snapshot_id, "user_id": user_id, "user_pk": user_pk}
        )
    ).one()
    if result.missing_state or result.missing_live:
        raise SnapshotSessionCreateFailedError(
            f"snapshot of user {user_id} is inconsistent: {result.missing_state} live row(s) "
            f"lack a live sync.row_state entry, {result.missing_live} live sync.row_state "
            f"entr(ies) lack a business row (first: table_id:key_hex {result.example})"
        )
    return MaterializedSnapshot(row_count=int(result.row_count), byte_count=int(result.byte_count))
