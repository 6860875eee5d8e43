"""Alembic support for oversync-sa: autogenerate the sync columns, triggers and catalog.

``alembic_ext`` makes ``alembic revision --autogenerate`` produce, from the synced models'
server projection, the ``_sync_scope_id`` column and scope-first keys (standard Alembic
operations) plus the sync operations that install the runtime, register tables in
``sync.table_catalog`` and keep their capture/owner-guard triggers current. See
``docs/alembic.md``.
"""

import alembic_ext.render  # noqa: F401  (registers the sync ops and their renderers)
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
