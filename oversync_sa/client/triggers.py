"""Per-table SQLite triggers: dirty capture, write guards, download-only protection (§3.1-3.3).

Each synced table gets six triggers named ``trg_<table>_<suffix>``:

* ``bi_guard`` / ``bu_guard`` / ``bd_guard`` (BEFORE) abort application writes with
  ``SYNC_TRANSITION_PENDING`` while a destructive transition (``remote_replace`` or
  ``source_recovery``) is pending;
* ``ai`` / ``au`` / ``ad`` (AFTER) coalesce the write into ``_sync_dirty_rows``: one row per key,
  whose ``base_row_version`` and ``dirty_ordinal`` are pinned by the first capture while ``op``,
  ``payload`` and ``updated_at`` follow the latest write.

A ``download_only`` table gets only the three BEFORE triggers, and they reject *every* write made
outside the client's apply mode; nothing is ever captured for it, so pulls write it at full speed.

All triggers are inert while ``_sync_apply_state.apply_mode = 1``, which the client sets inside
its own write transactions (:func:`set_apply_mode`). Identifiers are quoted and literals escaped,
so any table, column or schema name works (Go embeds them raw, §12.36).
"""

from __future__ import annotations

import logging
from typing import Final

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client.encoding import (
    key_json_sql,
    payload_json_sql,
    quote_identifier,
    sql_literal,
)
from oversync_sa.client.local_schema import (
    NEXT_DIRTY_ORDINAL_SQL,
    SYNC_TIMESTAMP_SQL,
    fetch_all,
    record_managed_table,
)
from oversync_sa.client.validation import ManagedSchema, TableInfo

__all__ = [
    "TRANSITION_PENDING_MESSAGE",
    "build_triggers",
    "download_only_message",
    "drop_triggers",
    "install_managed_triggers",
    "install_triggers",
    "is_transition_pending_error",
    "set_apply_mode",
    "trigger_names",
]

_log = logging.getLogger("oversync_sa.client.triggers")

#: Message of the abort raised by the write guards during a destructive transition.
TRANSITION_PENDING_MESSAGE: Final = "SYNC_TRANSITION_PENDING"

_SUFFIXES: Final = ("bi_guard", "bu_guard", "bd_guard", "ai", "au", "ad")

_APPLY_MODE: Final = (
    "COALESCE((SELECT apply_mode FROM _sync_apply_state WHERE singleton_key = 1), 0)"
)
_OPERATION_KIND: Final = (
    "COALESCE((SELECT kind FROM _sync_operation_state WHERE singleton_key = 1), 'none')"
)


def trigger_names(table: str) -> tuple[str, ...]:
    """The six trigger names the client may own on ``table`` (guards first)."""
    lowered = table.strip().lower()
    return tuple(f"trg_{lowered}_{suffix}" for suffix in _SUFFIXES)


def download_only_message(table: str) -> str:
    """The abort message a local write to a download-only table fails with."""
    return (
        f"oversync: table {table} is download-only; local writes are rejected"
        " (only the sync client may write it)"
    )


def is_transition_pending_error(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause) is a write rejected by a transition guard."""
    current: BaseException | None = exc
    while current is not None:
        if TRANSITION_PENDING_MESSAGE in str(current):
            return True
        current = current.__cause__
    return False


def _guard(name: str, event: str, table: str, when: str, message: str) -> str:
    return (
        f"CREATE TRIGGER {quote_identifier(name)} BEFORE {event} ON {quote_identifier(table)}\n"
        f"WHEN {when}\n"
        f"BEGIN SELECT RAISE(ABORT, {sql_literal(message)}); END"
    )


def _capture(schema: str, info: TableInfo, key: str, payload: str | None, where: str = "") -> str:
    """The upsert that coalesces one write into ``_sync_dirty_rows`` (CLIENT.md §3.1-3.2).

    ``payload`` ``None`` is the DELETE intent. On conflict only ``op``/``payload``/``updated_at``
    change, so the first capture's base version and ordinal stay pinned; that is also why the
    inserted base and ordinal need not look at an existing dirty row.

    Without ``where`` this is a single-row ``VALUES`` upsert. Capture runs once per application
    write, so its shape matters: an ``INSERT ... SELECT`` that also reads ``_sync_dirty_rows``
    (the next-ordinal subquery) makes SQLite stage the row in a temporary table first, about
    a tenth of the capture cost (benchmarks/README.md). The key expression is then written
    out three times; it is one ``json_object`` over a register, cheaper than the staging.
    ``where`` (the old key of a key-changing UPDATE) needs the ``SELECT`` form; that statement
    inserts nothing for the usual key-preserving UPDATE.
    """
    s, t = sql_literal(schema), sql_literal(info.name)
    same_key = f"r.schema_name = {s} AND r.table_name = {t} AND r.key_json = {key}"
    if payload is None:
        op = "'DELETE'"
        on_conflict = "op = 'DELETE', payload = NULL, updated_at = excluded.updated_at"
    else:
        op = (
            f"CASE WHEN EXISTS (SELECT 1 FROM _sync_row_state AS r WHERE {same_key}"
            " AND r.deleted = 0) THEN 'UPDATE' ELSE 'INSERT' END"
        )
        on_conflict = (
            "op = excluded.op, payload = excluded.payload, updated_at = excluded.updated_at"
        )
    values = (
        f"{s}, {t}, {key}, {op},\n"
        f"    COALESCE((SELECT r.row_version FROM _sync_row_state AS r WHERE {same_key}), 0),\n"
        f"    {payload or 'NULL'},\n"
        f"    ({NEXT_DIRTY_ORDINAL_SQL}),\n"
        f"    {SYNC_TIMESTAMP_SQL}"
    )
    # With SELECT, "WHERE" is required anyway: it keeps SQLite from reading ON CONFLICT as a
    # join clause.
    rows = f"SELECT {values}\n  WHERE {where}" if where else f"VALUES ({values})"
    return (
        "INSERT INTO _sync_dirty_rows (schema_name, table_name, key_json, op,"
        " base_row_version, payload, dirty_ordinal, updated_at)\n"
        f"  {rows}\n"
        f"  ON CONFLICT (schema_name, table_name, key_json) DO UPDATE SET {on_conflict};"
    )


def _capture_trigger(name: str, event: str, table: str, body: str) -> str:
    return (
        f"CREATE TRIGGER {quote_identifier(name)} AFTER {event} ON {quote_identifier(table)}\n"
        f"WHEN {_APPLY_MODE} = 0\n"
        f"BEGIN\n{body}\nEND"
    )


def build_triggers(schema: str, info: TableInfo) -> dict[str, str]:
    """Name -> ``CREATE TRIGGER`` statement for every trigger ``info`` should have."""
    bi, bu, bd, ai, au, ad = trigger_names(info.name)
    events = ((bi, "INSERT"), (bu, "UPDATE"), (bd, "DELETE"))
    if info.download_only:
        reject = f"{_APPLY_MODE} != 1"
        message = download_only_message(info.name)
        return {name: _guard(name, event, info.name, reject, message) for name, event in events}

    pending = f"{_OPERATION_KIND} != 'none' AND {_APPLY_MODE} != 1"
    triggers = {
        name: _guard(name, event, info.name, pending, TRANSITION_PENDING_MESSAGE)
        for name, event in events
    }
    new_key, old_key = key_json_sql(info, "NEW"), key_json_sql(info, "OLD")
    new_payload = payload_json_sql(info, "NEW")
    triggers[ai] = _capture_trigger(
        ai, "INSERT", info.name, _capture(schema, info, new_key, new_payload)
    )
    triggers[ad] = _capture_trigger(ad, "DELETE", info.name, _capture(schema, info, old_key, None))
    # A key-changing UPDATE is a DELETE of the old key plus an upsert of the new one.
    triggers[au] = _capture_trigger(
        au,
        "UPDATE",
        info.name,
        _capture(schema, info, old_key, None, where=f"{old_key} IS NOT {new_key}")
        + "\n"
        + _capture(schema, info, new_key, new_payload),
    )
    return triggers


async def install_triggers(conn: AsyncConnection, schema: str, info: TableInfo) -> list[str]:
    """Create or refresh the triggers of one table; returns the names created or dropped.

    Idempotent: a trigger whose stored SQL already equals the wanted SQL is left alone, a stale
    one is dropped and recreated, and a capture trigger left over from before the table became
    download-only is dropped. Runs in the caller's transaction.
    """
    wanted = build_triggers(schema, info)
    names = trigger_names(info.name)
    placeholders = ", ".join("?" for _ in names)
    existing = {
        str(name): str(sql).strip()
        for name, sql in await fetch_all(
            conn,
            "SELECT name, sql FROM sqlite_master"
            f" WHERE type = 'trigger' AND name IN ({placeholders})",
            names,
        )
    }
    changed: list[str] = []
    for name in names:
        sql = wanted.get(name)
        if sql is not None and existing.get(name) == sql:
            continue
        if name in existing:
            await conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote_identifier(name)}")
        if sql is not None:
            await conn.exec_driver_sql(sql)
        if sql is not None or name in existing:
            changed.append(name)
    if changed:
        _log.debug("refreshed triggers on %s: %s", info.name, ", ".join(changed))
    return changed


async def drop_triggers(conn: AsyncConnection, table: str) -> None:
    """Drop every client trigger of ``table`` (absent ones are fine); caller's transaction."""
    for name in trigger_names(table):
        await conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote_identifier(name)}")


async def install_managed_triggers(conn: AsyncConnection, managed: ManagedSchema) -> None:
    """Install triggers for, and register, every managed table (§1.2 step 9).

    Runs in the caller's transaction; the caller commits.
    """
    for info in managed.tables:
        try:
            await install_triggers(conn, managed.schema, info)
        except DBAPIError:
            _log.error("failed to install sync triggers on %s", info.name)
            raise
        await record_managed_table(conn, managed.schema, info.name)


async def set_apply_mode(conn: AsyncConnection, enabled: bool) -> None:
    """Switch capture and guards off (``True``) or back on, inside the caller's transaction.

    The client's own writes run between ``set_apply_mode(conn, True)`` and
    ``set_apply_mode(conn, False)`` in one transaction; on error the rollback restores 0, so the
    flag is never durably left on (§3.3).
    """
    await conn.exec_driver_sql(
        "UPDATE _sync_apply_state SET apply_mode = ? WHERE singleton_key = 1", (int(enabled),)
    )
