"""Autogenerate renderers: the Python text written into migration files for the sync ops.

Output is stable (positional schema/table, keyword ``key_column``, ``repr`` quoting), so render
tests can pin it. Each renderer also adds ``import alembic_ext.ops`` to the migration's imports:
the ``op.*`` names only exist once that module has registered them.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.types import TypeDecorator

from alembic_ext.ops import (
    CreateSyncSchemaOp,
    DropSyncRuntimeOp,
    DropSyncSchemaOp,
    InstallSyncRuntimeOp,
    RefreshSyncTriggersOp,
    RegisterSyncTableOp,
    SyncTableOp,
    UnregisterSyncTableOp,
)

__all__ = ["OPS_IMPORT", "render_item"]

#: The import line every migration using a sync op needs.
OPS_IMPORT = "import alembic_ext.ops  # noqa: F401  (registers op.*_sync_* operations)"


def _prefix(autogen_context: AutogenContext) -> str:
    autogen_context.imports.add(OPS_IMPORT)
    return str(autogen_context.opts.get("alembic_module_prefix", "op."))


def _table_args(operation: SyncTableOp) -> str:
    return f"{operation.schema!r}, {operation.table!r}"


@renderers.dispatch_for(CreateSyncSchemaOp)
def _render_create_schema(autogen_context: AutogenContext, operation: CreateSyncSchemaOp) -> str:
    return f"{_prefix(autogen_context)}create_sync_schema({operation.schema!r})"


@renderers.dispatch_for(DropSyncSchemaOp)
def _render_drop_schema(autogen_context: AutogenContext, operation: DropSyncSchemaOp) -> str:
    return f"{_prefix(autogen_context)}drop_sync_schema({operation.schema!r})"


@renderers.dispatch_for(InstallSyncRuntimeOp)
def _render_install(autogen_context: AutogenContext, operation: InstallSyncRuntimeOp) -> str:
    return f"{_prefix(autogen_context)}install_sync_runtime()"


@renderers.dispatch_for(DropSyncRuntimeOp)
def _render_drop(autogen_context: AutogenContext, operation: DropSyncRuntimeOp) -> str:
    return f"{_prefix(autogen_context)}drop_sync_runtime()"


@renderers.dispatch_for(RegisterSyncTableOp)
def _render_register(autogen_context: AutogenContext, operation: RegisterSyncTableOp) -> str:
    return (
        f"{_prefix(autogen_context)}register_sync_table("
        f"{_table_args(operation)}, key_column={operation.key_column!r})"
    )


@renderers.dispatch_for(UnregisterSyncTableOp)
def _render_unregister(autogen_context: AutogenContext, operation: UnregisterSyncTableOp) -> str:
    key = "" if operation.key_column is None else f", key_column={operation.key_column!r}"
    return f"{_prefix(autogen_context)}unregister_sync_table({_table_args(operation)}{key})"


@renderers.dispatch_for(RefreshSyncTriggersOp)
def _render_refresh(autogen_context: AutogenContext, operation: RefreshSyncTriggersOp) -> str:
    return f"{_prefix(autogen_context)}refresh_sync_triggers({_table_args(operation)})"


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """``render_item`` hook: write oversync column types as their PostgreSQL-side generic type.

    The projection keeps the model's ``SyncUUID``/``UTCDateTime``/``SyncBoolean`` decorators, which
    exist for SQLite storage; on PostgreSQL they are plain ``Uuid``/``DateTime(timezone=True)``/
    ``Boolean``. Rendering the generic type keeps migrations free of library internals.
    """
    if type_ != "type" or not isinstance(obj, TypeDecorator):
        return False
    if not type(obj).__module__.startswith("oversync_sa."):
        return False
    impl = obj.impl_instance
    if type(impl).__module__ != "sqlalchemy.sql.sqltypes":
        return False
    return f"{autogen_context.opts.get('sqlalchemy_module_prefix', 'sa.')}{impl!r}"
