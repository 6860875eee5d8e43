"""The authoritative PostgreSQL side of oversync: configuration, bootstrap, runtime schema."""

from oversync_sa.server.config import BundleChangeWatchConfig, RegisteredTable, ServiceConfig
from oversync_sa.server.runtime_info import RuntimeTable, SyncRuntime
from oversync_sa.server.service import ServiceClosedError, ServiceState, SyncService

__all__ = [
    "BundleChangeWatchConfig",
    "RegisteredTable",
    "RuntimeTable",
    "ServiceClosedError",
    "ServiceConfig",
    "ServiceState",
    "SyncRuntime",
    "SyncService",
]
