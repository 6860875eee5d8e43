"""Create or upgrade the SQLite mirror of the synced models without losing pending changes.

A new app version ships new models; the device's SQLite file still has the old tables, their
capture triggers and possibly *dirty rows* that have not been pushed yet. :func:`upgrade_schema`
brings the file to the new model version inside one transaction:

1. tables new in the models are created from ``client_projection(models)`` (``create_all``,
   ``checkfirst``), missing indexes are created;
2. columns new in the models are added with ``ALTER TABLE ... ADD COLUMN`` (a new FK column gets
   its ``REFERENCES`` clause, so a UUID reference keeps its wire encoding);
3. the managed tables are validated (CLIENT.md §1.2) and their triggers refreshed, so later
   captures include the new columns;
4. pending dirty payloads of widened tables are re-serialised from the live rows, so the next
   push sends the new columns too (a dirty payload always equals its live row: captures keep it
   current and pulls are refused while dirty rows exist). Base versions and ordinals are kept.

A frozen outbox is deliberately left alone: it must be re-sent verbatim (§12.6). Its replay
compares the committed payload with the live row, sees the new column differ and requeues an
UPDATE carrying it.

Changes that SQLite cannot apply in place, or that would lose data, are refused with
:class:`DestructiveSchemaChangeError` naming every table/column before anything is written:
removed or re-keyed columns, changed storage affinity, a new NOT NULL column without a server
default, a new primary-key/unique column, and a table dropped from the models while it still
has pending rows. Tightening nullability or CHECK constraints of existing columns is not applied
(it needs a table rebuild and loses nothing); rebuild such tables yourself if you need it.
A table dropped from the models without pending rows is *retired*: its capture triggers are
removed and its replicated row state is forgotten, its rows kept as local data (``detach`` still
clears them, §4.5). A retired table that comes back is not trusted: on an attached database its
rows are dropped and the pull checkpoint rewinds so the next pull restores it from the server
(:mod:`oversync_sa.client.table_set`). :func:`reconcile_table_set` applies the same two rules to
a client built from a plain ``ClientConfig``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateColumn

from oversync_sa.client.config import ClientConfig
from oversync_sa.client.encoding import local_pk_from_key_json, quote_identifier, serialize_row
from oversync_sa.client.local_schema import fetch_all, initialize_database, record_managed_table
from oversync_sa.client.table_set import (
    reentering_tables,
    registered_tables,
    rehydrate_tables,
    retire_table,
)
from oversync_sa.client.triggers import install_triggers
from oversync_sa.client.validation import ManagedSchema, validate_managed_tables
from oversync_sa.errors import OversyncError

__all__ = [
    "ChangeKind",
    "DestructiveSchemaChangeError",
    "RefusedChange",
    "SchemaPlan",
    "SchemaUpgradeReport",
    "apply_schema_upgrade",
    "plan_schema_upgrade",
    "reconcile_table_set",
    "upgrade_schema",
    "upgrade_schema_in",
]

_log = logging.getLogger("oversync_sa.client.schema_upgrade")

_DIALECT: Final = sqlite.dialect()


class ChangeKind(StrEnum):
    """Why a model change cannot be applied to the SQLite mirror in place."""

    COLUMN_REMOVED = "column_removed"
    TYPE_CHANGED = "type_changed"
    KEY_CHANGED = "key_changed"
    NOT_NULL_WITHOUT_DEFAULT = "not_null_without_default"
    UNSUPPORTED_NEW_COLUMN = "unsupported_new_column"
    TABLE_REMOVED_WITH_PENDING_ROWS = "table_removed_with_pending_rows"


@dataclass(frozen=True, slots=True)
class RefusedChange:
    """One refused change; ``column`` is ``None`` for table-level changes."""

    table: str
    column: str | None
    kind: ChangeKind
    detail: str

    def __str__(self) -> str:
        where = self.table if self.column is None else f"{self.table}.{self.column}"
        return f"{where}: {self.detail} ({self.kind})"


class DestructiveSchemaChangeError(OversyncError):
    """The new models need a change the in-place upgrade refuses; nothing was written.

    ``changes`` lists every refused change; ``table``/``column`` name the first one.
    """

    def __init__(self, changes: Sequence[RefusedChange]) -> None:
        self.changes = tuple(changes)
        first = self.changes[0]
        self.table = first.table
        self.column = first.column
        listed = "; ".join(str(change) for change in self.changes)
        super().__init__(f"refusing destructive client schema change: {listed}")


@dataclass(frozen=True, slots=True)
class SchemaPlan:
    """What :func:`apply_schema_upgrade` would do; ``refused`` non-empty means it will raise."""

    create_tables: tuple[str, ...] = ()
    add_columns: tuple[tuple[str, str], ...] = ()
    create_indexes: tuple[str, ...] = ()
    retire_tables: tuple[str, ...] = ()
    refused: tuple[RefusedChange, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the file already matches the models (triggers may still need a refresh)."""
        return not (
            self.create_tables or self.add_columns or self.create_indexes or self.retire_tables
        )


@dataclass(frozen=True, slots=True)
class SchemaUpgradeReport:
    """What an upgrade changed; ``refreshed_triggers`` lists trigger names created/replaced."""

    plan: SchemaPlan
    refreshed_triggers: tuple[str, ...] = ()
    rewritten_dirty_rows: int = 0
    #: Re-entering tables whose local rows were dropped to be pulled again (``table_set``).
    rehydrated_tables: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return not self.plan.empty or bool(
            self.refreshed_triggers or self.rewritten_dirty_rows or self.rehydrated_tables
        )


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class _LiveColumn:
    name: str
    declared_type: str
    pk: int


def _affinity(declared_type: str) -> str:
    """SQLite's column affinity rules (datatype3 §3.1), in their precedence order."""
    upper = declared_type.upper()
    if "INT" in upper:
        return "INTEGER"
    if any(part in upper for part in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper:
        return "BLOB"
    if any(part in upper for part in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _sqlite_type(column: sa.Column[Any]) -> str:
    return str(column.type.compile(dialect=_DIALECT))


async def _live_columns(conn: AsyncConnection, table: str) -> dict[str, _LiveColumn]:
    rows = await fetch_all(
        conn, "SELECT name, type, pk FROM pragma_table_info(?) ORDER BY cid", (table,)
    )
    return {
        str(r[0]).lower(): _LiveColumn(str(r[0]), str(r[1] or ""), int(r[2])) for r in rows
    }


async def _pending_rows(conn: AsyncConnection, schema: str, table: str) -> int:
    total = 0
    for metadata_table in ("_sync_dirty_rows", "_sync_outbox_rows"):
        (row,) = await fetch_all(
            conn,
            f"SELECT COUNT(*) FROM {metadata_table} WHERE schema_name = ? AND table_name = ?",
            (schema, table),
        )
        total += int(row[0])
    return total


def _unique_columns(table: sa.Table) -> set[str]:
    found: set[str] = set()
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            found.update(c.name.lower() for c in constraint.columns)
    return found


def _table_changes(
    table: sa.Table, live: Mapping[str, _LiveColumn]
) -> tuple[list[tuple[str, str]], list[RefusedChange]]:
    """New columns to add and refused changes for one existing table."""
    name = table.name.lower()
    added: list[tuple[str, str]] = []
    refused: list[RefusedChange] = []
    wanted = {c.name.lower(): c for c in table.columns}

    for lowered, current in live.items():
        if lowered not in wanted:
            refused.append(RefusedChange(
                name, current.name, ChangeKind.COLUMN_REMOVED,
                "column is no longer in the models; dropping it would lose its data",
            ))
    live_key = sorted(c.name.lower() for c in live.values() if c.pk > 0)
    model_key = sorted(c.name.lower() for c in table.primary_key.columns)
    if live_key != model_key:
        refused.append(RefusedChange(
            name, ", ".join(model_key) or None, ChangeKind.KEY_CHANGED,
            f"primary key changes from ({', '.join(live_key)}) to ({', '.join(model_key)})",
        ))
    unique = _unique_columns(table)
    for lowered, column in wanted.items():
        existing = live.get(lowered)
        declared = _sqlite_type(column)
        if existing is not None:
            before, after = _affinity(existing.declared_type), _affinity(declared)
            if before != after:
                refused.append(RefusedChange(
                    name, column.name, ChangeKind.TYPE_CHANGED,
                    f"storage changes from {existing.declared_type or 'untyped'} ({before})"
                    f" to {declared} ({after})",
                ))
            continue
        if column.primary_key or lowered in unique:
            refused.append(RefusedChange(
                name, column.name, ChangeKind.UNSUPPORTED_NEW_COLUMN,
                "a new primary-key or UNIQUE column needs a table rebuild"
                " (use a unique Index for new columns)",
            ))
        elif not column.nullable and column.server_default is None:
            refused.append(RefusedChange(
                name, column.name, ChangeKind.NOT_NULL_WITHOUT_DEFAULT,
                "a new NOT NULL column needs a server_default to fill existing rows",
            ))
        else:
            added.append((name, column.name))
    return added, refused


async def plan_schema_upgrade(
    conn: AsyncConnection, models: Any, schema: str = "business"
) -> SchemaPlan:
    """Compare the SQLite file with ``client_projection(models)``; reads only.

    ``schema`` is the server schema the sync state belongs to (used to find retired tables and
    their pending rows). Needs the metadata tables (``initialize_database``).
    """
    projection = _projection(models)
    created: list[str] = []
    added: list[tuple[str, str]] = []
    refused: list[RefusedChange] = []
    indexes: list[str] = []
    existing_indexes = {
        str(r[0]) for r in await fetch_all(
            conn, "SELECT name FROM sqlite_master WHERE type = 'index'"
        )
    }
    for table in projection.sorted_tables:
        live = await _live_columns(conn, table.name)
        if not live:
            created.append(table.name.lower())
            continue
        table_added, table_refused = _table_changes(table, live)
        added += table_added
        refused += table_refused
        indexes += sorted(
            str(index.name) for index in table.indexes
            if index.name is not None and index.name not in existing_indexes
        )

    modelled = {t.name.lower() for t in projection.sorted_tables}
    retired: list[str] = []
    for (table_name,) in await fetch_all(
        conn,
        "SELECT table_name FROM _sync_managed_tables WHERE schema_name = ? ORDER BY table_name",
        (schema,),
    ):
        name = str(table_name)
        if name in modelled:
            continue
        pending = await _pending_rows(conn, schema, name)
        if pending:
            refused.append(RefusedChange(
                name, None, ChangeKind.TABLE_REMOVED_WITH_PENDING_ROWS,
                f"table left the models with {pending} unpushed row(s); push them first",
            ))
        else:
            retired.append(name)
    return SchemaPlan(
        create_tables=tuple(created),
        add_columns=tuple(added),
        create_indexes=tuple(indexes),
        retire_tables=tuple(retired),
        refused=tuple(refused),
    )


def _projection(models: Any) -> sa.MetaData:
    # Imported here so that the client package does not need the ORM layer unless models are
    # used (the metadata package does not import the client, so there is no cycle either way).
    from oversync_sa.metadata import client_projection

    return client_projection(models)


# --------------------------------------------------------------------------- applying


def _references_clause(column: sa.Column[Any]) -> str:
    """The column-level ``REFERENCES`` clause of a new single-column FK column, if any."""
    for fk in column.foreign_keys:
        constraint = fk.constraint
        if constraint is None or len(constraint.columns) != 1:
            continue
        target = fk.column
        clause = (
            f" REFERENCES {quote_identifier(target.table.name)}"
            f" ({quote_identifier(target.name)})"
        )
        if constraint.ondelete:
            clause += f" ON DELETE {constraint.ondelete}"
        if constraint.onupdate:
            clause += f" ON UPDATE {constraint.onupdate}"
        # The projection makes every FK deferrable, like tables created by create_all.
        return clause + " DEFERRABLE INITIALLY DEFERRED"
    return ""


async def apply_schema_upgrade(
    conn: AsyncConnection, models: Any, schema: str = "business"
) -> SchemaPlan:
    """Create tables/columns/indexes for ``models`` in the caller's transaction (DDL only).

    Raises :class:`DestructiveSchemaChangeError` (before any DDL) when the plan refuses
    anything. Triggers and dirty payloads are handled by :func:`upgrade_schema`.
    """
    plan = await plan_schema_upgrade(conn, models, schema)
    if plan.refused:
        raise DestructiveSchemaChangeError(plan.refused)
    projection = _projection(models)
    if plan.create_tables:
        wanted = [t for t in projection.sorted_tables if t.name.lower() in plan.create_tables]
        await conn.run_sync(lambda sync: projection.create_all(sync, tables=wanted))
        _log.info("created client tables: %s", ", ".join(plan.create_tables))
    tables = {t.name.lower(): t for t in projection.sorted_tables}
    for table_name, column_name in plan.add_columns:
        column = tables[table_name].c[column_name]
        definition = str(CreateColumn(column).compile(dialect=_DIALECT)).strip()
        await conn.exec_driver_sql(
            f"ALTER TABLE {quote_identifier(table_name)} ADD COLUMN {definition}"
            f"{_references_clause(column)}"
        )
        _log.info("added column %s.%s", table_name, column_name)
    for table in projection.sorted_tables:
        for index in table.indexes:
            if index.name in plan.create_indexes:
                await conn.run_sync(_create_index, index)
    for table_name in plan.retire_tables:
        await retire_table(conn, schema, table_name)
        _log.info("retired table %s: capture triggers and row state dropped, rows kept",
                  table_name)
    return plan


def _create_index(sync: sa.Connection, index: sa.Index) -> None:
    index.create(sync, checkfirst=True)


async def _rewrite_dirty_payloads(
    conn: AsyncConnection, managed: ManagedSchema, tables: Iterable[str]
) -> int:
    """Re-serialise the pending (non-delete) payloads of ``tables`` from their live rows."""
    rewritten = 0
    for name in sorted(set(tables)):
        info = managed.table(name)
        rows = await fetch_all(
            conn,
            "SELECT key_json FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ?"
            " AND payload IS NOT NULL",
            (managed.schema, info.name),
        )
        for (key_json,) in rows:
            payload = await serialize_row(conn, info, local_pk_from_key_json(info, str(key_json)))
            if payload is None:
                continue
            await conn.exec_driver_sql(
                "UPDATE _sync_dirty_rows SET payload = ? WHERE schema_name = ?"
                " AND table_name = ? AND key_json = ?",
                (payload, managed.schema, info.name, key_json),
            )
            rewritten += 1
    return rewritten


async def reconcile_table_set(conn: AsyncConnection, managed: ManagedSchema) -> tuple[str, ...]:
    """Retire registered tables that ``managed`` no longer lists; reset re-entering ones.

    Call after validation and before the triggers are installed. A leaving table with pending
    rows is refused (:class:`DestructiveSchemaChangeError`), as in the model upgrade. Returns
    the re-entering tables that were dropped to be pulled again (attached databases only).
    """
    configured = [info.name for info in managed.tables]
    leaving = [t for t in await registered_tables(conn, managed.schema) if t not in configured]
    refused = []
    for name in leaving:
        pending = await _pending_rows(conn, managed.schema, name)
        if pending:
            refused.append(RefusedChange(
                name, None, ChangeKind.TABLE_REMOVED_WITH_PENDING_ROWS,
                f"table left the sync configuration with {pending} unpushed row(s);"
                " push them first",
            ))
    if refused:
        raise DestructiveSchemaChangeError(refused)
    for name in leaving:
        await retire_table(conn, managed.schema, name)
    reentering = await reentering_tables(conn, managed.schema, configured)
    if await rehydrate_tables(conn, managed.schema, reentering):
        return tuple(reentering)
    return ()


async def upgrade_schema_in(
    conn: AsyncConnection, models: Any, config: ClientConfig
) -> tuple[ManagedSchema, SchemaUpgradeReport]:
    """The whole upgrade in the caller's transaction; returns the validated managed schema.

    The metadata tables must exist. ``config`` names the managed tables (usually
    ``ClientConfig.from_models(models, ...)``); validation failures raise
    :class:`~oversync_sa.errors.UnsupportedSchemaError` and roll the caller's transaction back.
    """
    plan = await apply_schema_upgrade(conn, models, config.schema)
    managed = await validate_managed_tables(conn, config)
    rehydrated = await reconcile_table_set(conn, managed)
    refreshed: list[str] = []
    for info in managed.tables:
        refreshed += await install_triggers(conn, managed.schema, info)
        await record_managed_table(conn, managed.schema, info.name)
    widened = {table for table, _column in plan.add_columns}
    rewritten = await _rewrite_dirty_payloads(
        conn, managed, (t for t in widened if t in {i.name for i in managed.tables})
    )
    if rewritten:
        _log.info("re-serialised %d pending dirty payload(s) with the new columns", rewritten)
    return managed, SchemaUpgradeReport(plan, tuple(refreshed), rewritten, rehydrated)


async def upgrade_schema(
    database: str | Path | AsyncEngine,
    models: Any,
    *,
    schema: str = "business",
    config: ClientConfig | None = None,
) -> SchemaUpgradeReport:
    """Create or upgrade the SQLite file ``database`` to ``models`` in one transaction.

    For app start-up before a client exists (``SyncClient.create(..., models=Base)`` does the
    same itself). Do not run it while a client holds the database. ``config`` defaults to
    ``ClientConfig.from_models(models, schema=schema)``. An engine passed in is not disposed.
    """
    # Imported here: runtime imports transport/httpx, not needed by the other helpers.
    from oversync_sa.client.runtime import prepare_engine

    owned = not isinstance(database, AsyncEngine)
    engine = (
        database if isinstance(database, AsyncEngine)
        else create_async_engine(f"sqlite+aiosqlite:///{database}")
    )
    try:
        prepare_engine(engine)
        effective = config if config is not None else ClientConfig.from_models(models, schema)
        async with engine.connect() as conn:
            await initialize_database(conn, default_cache_kib=effective.default_cache_kib)
        async with engine.begin() as conn:
            _managed, report = await upgrade_schema_in(conn, models, effective)
        return report
    finally:
        if owned:
            await engine.dispose()
