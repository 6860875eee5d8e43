"""The SQLite half of applying a pulled bundle (CLIENT.md §7.3), in one driver hop.

:func:`apply_resolved` takes rows already decoded, keyed and collapsed per table (the pull
module's job) and writes them inside the caller's transaction: foreign keys deferred, capture
suppressed (apply mode on, then off again as the last write), rows already at or past their
version skipped, one ``executemany`` per table for upserts, deletes, ``_sync_row_state`` and -
only when the dirty set is not empty - consumed dirty rows, then the checkpoint. All of it runs
as one plain function on the driver thread (:func:`~oversync_sa.client.driver.run_on_driver`),
so a bundle costs one round trip instead of a dozen.

Tables are written in the order given (first seen in the bundle); with foreign keys deferred
the order cannot fail a bundle, and upserts go before deletes within a table as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import chain
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client.driver import run_on_driver
from oversync_sa.client.encoding import SqlValue, delete_sql, local_pk_to_sql, upsert_sql
from oversync_sa.client.local_schema import SYNC_TIMESTAMP_SQL
from oversync_sa.client.validation import TableInfo

__all__ = ["ResolvedRow", "ResolvedTables", "apply_resolved"]

#: A resolved row: (local_pk, row_version, SQL values or ``None`` for a delete).
ResolvedRow = tuple[str, int, tuple[SqlValue, ...] | None]
#: Per table name: its info and ``key_json -> row`` in bundle order.
ResolvedTables = Mapping[str, tuple[TableInfo, Mapping[str, ResolvedRow]]]

#: Bound parameters per ``IN (...)`` lookup; well below SQLite's default variable limit.
_IN_BATCH: Final = 500
#: Rows per multi-row statement. Every statement on a table with triggers opens a statement
#: journal and journals the pages it touches; writing rows in groups pays that once per group
#: instead of once per row (about a quarter of the apply SQL at 1,000-row bundles). Beyond
#: ~100 rows the longer statements cost more than they save.
_ROWS_PER_STATEMENT: Final = 64
#: SQLite before 3.32 binds at most 999 parameters per statement.
_MAX_PARAMETERS: Final = 999
_DELETE_DIRTY: Final = (
    "DELETE FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ? AND key_json = ?"
)
_SET_APPLY_MODE: Final = "UPDATE _sync_apply_state SET apply_mode = ? WHERE singleton_key = 1"
_ADVANCE: Final = (
    "UPDATE _sync_attachment_state SET last_bundle_seq_seen = MAX(last_bundle_seq_seen, ?)"
    " WHERE singleton_key = 1"
)


def _upsert_row_state_sql(rows: int) -> str:
    return (
        "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version, deleted,"
        " updated_at) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows) +
        " ON CONFLICT (schema_name, table_name, key_json) DO UPDATE SET"
        " row_version = excluded.row_version, deleted = excluded.deleted,"
        " updated_at = excluded.updated_at"
    )


def _known_versions(cursor: Any, schema: str, table: str, keys: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(keys), _IN_BATCH):
        batch = keys[start : start + _IN_BATCH]
        marks = ", ".join("?" * len(batch))
        cursor.execute(
            "SELECT key_json, row_version FROM _sync_row_state WHERE schema_name = ?"
            f" AND table_name = ? AND key_json IN ({marks})",
            (schema, table, *batch),
        )
        found.update((str(key_json), int(version)) for key_json, version in cursor.fetchall())
    return found


def _write_rows(
    cursor: Any, sql_for: Callable[[int], str], rows: Sequence[Sequence[Any]]
) -> None:
    """Execute ``sql_for(n)`` (a statement over ``n`` rows) over ``rows``, in order."""
    width = max(1, len(rows[0])) if rows else 1
    step = max(1, min(_ROWS_PER_STATEMENT, _MAX_PARAMETERS // width))
    full = sql_for(step) if len(rows) >= step else ""
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        cursor.execute(full if len(part) == step else sql_for(len(part)), tuple(chain(*part)))


def _apply(cursor: Any, schema: str, tables: ResolvedTables, bundle_seq: int) -> int:
    cursor.execute("PRAGMA defer_foreign_keys = ON")
    cursor.execute(_SET_APPLY_MODE, (1,))
    # One timestamp per bundle: the rows are written by one transaction anyway, and binding it
    # saves SQLite a strftime per row.
    cursor.execute(f"SELECT {SYNC_TIMESTAMP_SQL}, EXISTS (SELECT 1 FROM _sync_dirty_rows)")
    now, has_dirty = cursor.fetchone()
    written = 0
    for table, (info, rows) in tables.items():
        known = _known_versions(cursor, schema, table, list(rows))
        # Idempotence: a row already at (or past) this version was applied before.
        fresh = (
            [(key_json, row) for key_json, row in rows.items() if known.get(key_json, 0) < row[1]]
            if known
            else list(rows.items())
        )
        if not fresh:
            continue
        upserts = [row[2] for _, row in fresh if row[2] is not None]
        deletes = [(local_pk_to_sql(info, row[0]),) for _, row in fresh if row[2] is None]
        if upserts:
            _write_rows(cursor, partial(upsert_sql, info), upserts)
        if deletes:
            _write_rows(cursor, partial(delete_sql, info), deletes)
        states = [
            (schema, table, key_json, row[1], int(row[2] is None), now) for key_json, row in fresh
        ]
        _write_rows(cursor, _upsert_row_state_sql, states)
        if has_dirty:
            cursor.executemany(_DELETE_DIRTY, [(schema, table, key_json) for key_json, _ in fresh])
        written += len(fresh)
    cursor.execute(_ADVANCE, (bundle_seq,))
    cursor.execute(_SET_APPLY_MODE, (0,))
    return written


async def apply_resolved(
    conn: AsyncConnection, schema: str, tables: ResolvedTables, bundle_seq: int
) -> int:
    """Write one resolved bundle and move the checkpoint to ``bundle_seq`` (caller's tx).

    Returns how many rows were written (rows already at or past their version are skipped).
    On an error nothing is undone here: the caller's transaction rollback discards the partial
    writes and ``apply_mode = 1`` together.
    """
    return await run_on_driver(conn, lambda cursor: _apply(cursor, schema, tables, bundle_seq))
