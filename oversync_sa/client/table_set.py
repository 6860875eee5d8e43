"""Tables leaving or re-entering the managed set between two versions of an app.

A table that leaves the models (or ``ClientConfig.tables``) is *retired*: its capture triggers
are dropped and its sync metadata (``_sync_row_state``) is cleared, because nothing keeps them
true any more - the device stops pulling the table's changes and stops capturing its writes.
The rows themselves stay as local data, and the ``_sync_managed_tables`` registry keeps the
table so that detach and uninstall still reach it (CLIENT.md §2.2).

A retired table that comes back is recognised by that registry entry without triggers and
without sync state (a table the app rebuilt itself also loses its triggers, but keeps its row
state and pending rows, and is trusted). Its rows
are whatever was left when it retired plus any local-only writes since, while the server went on
(other devices, server writes, retention). They are not trusted: on an attached database they
are deleted and the pull checkpoint goes back to 0, so the next pull rebuilds the table from the
server - by replaying the retained bundles (rows that are already current are skipped by the
row-version rule) or, when history is pruned, by a snapshot. Pending changes of other tables
are unaffected and are pushed first as usual.

Every function runs inside the caller's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client.encoding import quote_identifier
from oversync_sa.client.local_schema import fetch_all
from oversync_sa.client.triggers import drop_triggers, set_apply_mode, trigger_names

__all__ = ["reentering_tables", "registered_tables", "rehydrate_tables", "retire_table"]

_log = logging.getLogger("oversync_sa.client.table_set")


async def registered_tables(conn: AsyncConnection, schema: str) -> list[str]:
    """Every table ever managed for ``schema`` (the registry), alphabetically."""
    return [
        str(row[0])
        for row in await fetch_all(
            conn,
            "SELECT table_name FROM _sync_managed_tables WHERE schema_name = ?"
            " ORDER BY table_name",
            (schema,),
        )
    ]


async def _has_triggers(conn: AsyncConnection, table: str) -> bool:
    names = trigger_names(table)
    placeholders = ", ".join("?" for _ in names)
    found = await fetch_all(
        conn,
        f"SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({placeholders})",
        names,
    )
    return int(found[0][0]) > 0


async def retire_table(conn: AsyncConnection, schema: str, table: str) -> None:
    """Stop syncing ``table``: drop its triggers and forget its replicated row state."""
    await drop_triggers(conn, table)
    await conn.exec_driver_sql(
        "DELETE FROM _sync_row_state WHERE schema_name = ? AND table_name = ?", (schema, table)
    )


async def _has_sync_state(conn: AsyncConnection, schema: str, table: str) -> bool:
    """Whether ``table`` still has replicated row state or pending (dirty/outbox) rows."""
    for metadata_table in ("_sync_row_state", "_sync_dirty_rows", "_sync_outbox_rows"):
        found = await fetch_all(
            conn,
            f"SELECT 1 FROM {metadata_table} WHERE schema_name = ? AND table_name = ? LIMIT 1",
            (schema, table),
        )
        if found:
            return True
    return False


async def reentering_tables(
    conn: AsyncConnection, schema: str, configured: Iterable[str]
) -> list[str]:
    """Configured tables that were managed before and retired since.

    A retired table is in the registry without triggers *and* without sync state:
    :func:`retire_table` forgets its row state, and a table with pending rows is never retired.
    A table that lost its triggers otherwise - the app rebuilt it (SQLite's create, copy, drop,
    rename, which ``schema_upgrade`` asks for to tighten a constraint) - still has its row
    state or pending rows: its rows are trusted, and its triggers are simply reinstalled.
    Dropping them instead loses its pending changes: without row state an edit is pushed as
    an INSERT, conflicts with the server's row and the default server-wins resolution drops
    it. Call before the triggers are (re)installed.
    """
    registry = set(await registered_tables(conn, schema))
    return [
        name for name in configured
        if name in registry
        and not await _has_triggers(conn, name)
        and not await _has_sync_state(conn, schema, name)
    ]


async def rehydrate_tables(
    conn: AsyncConnection, schema: str, tables: Sequence[str]
) -> bool:
    """Drop the untrusted rows of re-entering ``tables`` and rewind the pull checkpoint.

    Only for an attached database: an anonymous one has nothing to pull yet (its first attach
    seeds or replaces everything). Returns whether anything was reset. Managed tables that
    reference these ones re-enter with them (the managed set is FK-closed), so the deletes
    cannot strand a managed child; FKs are deferred for the rest of the transaction anyway.
    """
    if not tables:
        return False
    attached = await fetch_all(
        conn,
        "SELECT binding_state FROM _sync_attachment_state WHERE singleton_key = 1",
    )
    if not attached or attached[0][0] != "attached":
        return False
    await conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    await set_apply_mode(conn, True)
    for table in tables:
        await conn.exec_driver_sql(f"DELETE FROM {quote_identifier(table)}")
        await conn.exec_driver_sql(
            "DELETE FROM _sync_row_state WHERE schema_name = ? AND table_name = ?",
            (schema, table),
        )
    await set_apply_mode(conn, False)
    await conn.exec_driver_sql(
        "UPDATE _sync_attachment_state SET last_bundle_seq_seen = 0 WHERE singleton_key = 1"
    )
    _log.warning(
        "tables %s are synced again: their local rows were dropped and the next pull"
        " restores them from the server", ", ".join(tables),
    )
    return True
