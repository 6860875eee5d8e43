"""The autogenerate comparator: turn sync drift into sync operations.

It runs at ``schema`` level with :attr:`DispatchPriority.LAST`, after Alembic's own table,
column and constraint comparators, so it sees their operations and can place its own around
them. The resulting migration reads top to bottom as::

    op.install_sync_runtime()            # only if the sync layout is missing
    op.unregister_sync_table(...)        # before the tables they leave go away
    ... Alembic's own DDL (tables, columns, scope-inclusive FKs) ...
    op.register_sync_table(...)          # once the new tables exist
    op.refresh_sync_triggers(...)        # tables whose columns or triggers changed

and its downgrade is the exact reverse. Synced tables are the server-projection tables of the
target metadata (``Table.info`` carries :data:`~oversync_sa.metadata.SERVER_INFO_KEY`).

When to refresh: the triggers themselves are column-agnostic (``to_jsonb(NEW)``), so a column
change does not invalidate them. A refresh is still emitted for every synced table whose column
set changes in the same diff, because the refresh re-validates the sync contract (scope column,
key column type, catalog key) inside the migration transaction: a change that would make the
next bootstrap fail fails the migration instead. It is also emitted when the live triggers
differ from what bootstrap installs (missing, disabled, wrong function or arguments).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, ops

from alembic_ext.drift import LiveSyncState, read_live_state, trigger_drift
from alembic_ext.ops import (
    CreateSyncSchemaOp,
    InstallSyncRuntimeOp,
    RefreshSyncTriggersOp,
    RegisterSyncTableOp,
    UnregisterSyncTableOp,
)
from oversync_sa.metadata import SERVER_INFO_KEY
from oversync_sa.server.runtime_schema import SYNC_SCHEMA

__all__ = ["SyncedTable", "compare_sync_state", "synced_tables"]

_log = logging.getLogger("alembic_ext.compare")

_COLUMN_OPS: Final = (ops.AddColumnOp, ops.DropColumnOp)


@dataclass(frozen=True, slots=True)
class SyncedTable:
    """A server-projection table of the target metadata."""

    schema: str
    table: str
    key_column: str

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


def _metadatas(autogen_context: AutogenContext) -> list[sa.MetaData]:
    metadata = autogen_context.metadata
    if metadata is None:
        return []
    return [metadata] if isinstance(metadata, sa.MetaData) else list(metadata)


def synced_tables(autogen_context: AutogenContext, default_schema: str) -> list[SyncedTable]:
    """Server-projection tables that pass the environment's object filters, in name order."""
    found: list[SyncedTable] = []
    for metadata in _metadatas(autogen_context):
        for table in metadata.tables.values():
            registration = table.info.get(SERVER_INFO_KEY)
            if registration is None:
                continue
            if not autogen_context.run_object_filters(table, table.name, "table", False, None):
                continue
            found.append(
                SyncedTable(table.schema or default_schema, table.name, registration.key_column)
            )
    return sorted(found, key=lambda t: t.name)


def _is_sync_op(op: MigrateOperation) -> bool:
    return getattr(op, "schema", None) == SYNC_SCHEMA


def _column_changed(op: ops.ModifyTableOps) -> bool:
    return any(
        isinstance(inner, _COLUMN_OPS)
        or (isinstance(inner, ops.AlterColumnOp) and inner.modify_name is not None)
        for inner in op.ops
    )


def _tables_with_column_changes(upgrade_ops: ops.UpgradeOps, default_schema: str) -> set[str]:
    return {
        f"{op.schema or default_schema}.{op.table_name}"
        for op in upgrade_ops.ops
        if isinstance(op, ops.ModifyTableOps) and _column_changed(op)
    }


def _plan(
    wanted: list[SyncedTable],
    live: LiveSyncState,
    column_changes: set[str],
    existing_schemas: set[str],
) -> tuple[list[MigrateOperation], list[MigrateOperation]]:
    """Sync operations to put before and after the standard DDL."""
    before: list[MigrateOperation] = [
        CreateSyncSchemaOp(schema)
        for schema in sorted({t.schema for t in wanted} - existing_schemas)
    ]
    after: list[MigrateOperation] = []
    if wanted and not live.runtime_installed:
        before.append(InstallSyncRuntimeOp())
    wanted_names = {t.name for t in wanted}
    for name, (_, entry) in sorted(live.catalog.items()):
        if name not in wanted_names:
            before.append(
                UnregisterSyncTableOp(entry.schema, entry.table, key_column=entry.key_column)
            )
    refresh: list[MigrateOperation] = []
    for table in wanted:
        registered = live.catalog.get(table.name)
        if registered is None:
            after.append(RegisterSyncTableOp(table.schema, table.table, table.key_column))
            continue
        if registered[1].key_column != table.key_column:
            _log.warning(
                "sync key of %s changed from %s to %s: not migrated automatically",
                table.name,
                registered[1].key_column,
                table.key_column,
            )
        drift = trigger_drift(live, table.name)
        if drift:
            _log.info("sync triggers of %s drifted: %s", table.name, "; ".join(drift))
        if drift or table.name in column_changes:
            refresh.append(RefreshSyncTriggersOp(table.schema, table.table))
    return before, after + refresh


def compare_sync_state(
    autogen_context: AutogenContext,
    upgrade_ops: ops.UpgradeOps,
    schemas: set[str | None],
) -> None:
    """``schema``-level comparator: add the sync operations this migration needs."""
    connection = autogen_context.connection
    assert connection is not None  # autogenerate always runs online
    default_schema = str(connection.dialect.default_schema_name or "public")
    # The sync layout is managed by the sync operations, never by table DDL.
    upgrade_ops.ops[:] = [op for op in upgrade_ops.ops if not _is_sync_op(op)]
    for op in upgrade_ops.ops:
        if isinstance(op, ops.CreateTableOp) and SERVER_INFO_KEY in op.info:
            # The registration object is for the library, not for the migration file.
            op.info = {k: v for k, v in op.info.items() if k != SERVER_INFO_KEY}
    wanted = synced_tables(autogen_context, default_schema)
    live = read_live_state(connection)
    before, after = _plan(
        wanted,
        live,
        _tables_with_column_changes(upgrade_ops, default_schema),
        set(autogen_context.inspector.get_schema_names()),
    )
    upgrade_ops.ops[:] = [*before, *upgrade_ops.ops, *after]
