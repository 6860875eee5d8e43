"""The authoritative PostgreSQL side of oversync: one :class:`SyncService` over an AsyncEngine.

Framework-free: the Litestar adapter (:mod:`oversync_sa.litestar`) and Alembic glue
(:mod:`alembic_ext`) are thin layers on top of what is exported here.
"""

from oversync_sa.server.actor import Actor
from oversync_sa.server.config import BundleChangeWatchConfig, RegisteredTable, ServiceConfig
from oversync_sa.server.finalize import CommittedBundle
from oversync_sa.server.lifecycle import ServiceClosedError, ServiceState
from oversync_sa.server.locks import TransactionControlError
from oversync_sa.server.retention import PruneProgress
from oversync_sa.server.runtime_info import RuntimeTable, SyncRuntime
from oversync_sa.server.service import SyncService
from oversync_sa.server.watch import BundleChangeSubscription
from oversync_sa.server.writes import (
    BundleSource,
    BundleWriter,
    ScopeManager,
    ScopeWriteResult,
    within_sync_bundle,
)

__all__ = [
    "Actor",
    "BundleChangeSubscription",
    "BundleChangeWatchConfig",
    "BundleSource",
    "BundleWriter",
    "CommittedBundle",
    "PruneProgress",
    "RegisteredTable",
    "RuntimeTable",
    "ScopeManager",
    "ScopeWriteResult",
    "ServiceClosedError",
    "ServiceConfig",
    "ServiceState",
    "SyncRuntime",
    "SyncService",
    "TransactionControlError",
    "within_sync_bundle",
]
