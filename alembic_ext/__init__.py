"""Alembic support for oversync-sa: autogenerate the sync columns, triggers and catalog.

``alembic_ext`` makes ``alembic revision --autogenerate`` produce, from the synced models'
server projection, the ``_sync_scope_id`` column and scope-first keys (standard Alembic
operations) plus the sync operations that install the runtime, register tables in
``sync.table_catalog`` and keep their capture/owner-guard triggers current. See
``docs/alembic.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic_ext.filters import include_name, include_object
    from alembic_ext.ops import (
        CreateSyncSchemaOp,
        DropSyncRuntimeOp,
        DropSyncSchemaOp,
        InstallSyncRuntimeOp,
        RefreshSyncTriggersOp,
        RegisterSyncTableOp,
        UnregisterSyncTableOp,
    )
    from alembic_ext.versioning import SCHEMA_VERSION_MARKER, schema_version
    from alembic_ext.wiring import context_options, enable_sync_autogenerate, target_metadata

__all__ = [
    "SCHEMA_VERSION_MARKER",
    "CreateSyncSchemaOp",
    "DropSyncRuntimeOp",
    "DropSyncSchemaOp",
    "InstallSyncRuntimeOp",
    "RefreshSyncTriggersOp",
    "RegisterSyncTableOp",
    "UnregisterSyncTableOp",
    "context_options",
    "enable_sync_autogenerate",
    "include_name",
    "include_object",
    "schema_version",
    "target_metadata",
]

# Exports are resolved on first use (PEP 562): Alembic imports ``alembic_ext.plugin`` through its
# entry point while ``alembic.autogenerate`` is half-initialised, and importing our ops/render
# modules at that moment would be a circular import.
_HOMES = {
    "include_name": "filters",
    "include_object": "filters",
    "CreateSyncSchemaOp": "ops",
    "DropSyncRuntimeOp": "ops",
    "DropSyncSchemaOp": "ops",
    "InstallSyncRuntimeOp": "ops",
    "RefreshSyncTriggersOp": "ops",
    "RegisterSyncTableOp": "ops",
    "UnregisterSyncTableOp": "ops",
    "SCHEMA_VERSION_MARKER": "versioning",
    "schema_version": "versioning",
    "context_options": "wiring",
    "enable_sync_autogenerate": "wiring",
    "target_metadata": "wiring",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'alembic_ext' has no attribute {name!r}")
    # The renderers register the sync ops with Alembic; load them with any export.
    importlib.import_module("alembic_ext.render")
    value = getattr(importlib.import_module(f"alembic_ext.{home}"), name)
    globals()[name] = value
    return value
