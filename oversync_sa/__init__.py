"""oversync-sa: two-way sync between SQLite clients and an authoritative PostgreSQL server.

The everyday names are importable from here; the subpackages hold the rest:
:mod:`oversync_sa.metadata` (``SyncedBase``, projections), :mod:`oversync_sa.server`
(``SyncService`` and friends), :mod:`oversync_sa.client` (``SyncClient`` and friends),
:mod:`oversync_sa.litestar` (the HTTP adapter), :mod:`oversync_sa.errors` (the error tree).
See ``docs/architecture.md`` for the layers.

Server and client names resolve on first use (PEP 562): ``import oversync_sa`` needs only the
core dependencies, and a name from an extra that is not installed fails with that extra's
``ImportError`` when it is touched, not before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from oversync_sa import errors
from oversync_sa.errors import OversyncError, UnsupportedSchemaError, WireError

if TYPE_CHECKING:
    from oversync_sa.client import (
        BlockingSyncClient,
        ClientConfig,
        ClientWinsResolver,
        ServerWinsResolver,
        SyncClient,
        SyncTable,
    )
    from oversync_sa.metadata import SyncedBase, client_projection, server_projection
    from oversync_sa.server import (
        Actor,
        RegisteredTable,
        ScopeManager,
        ServiceConfig,
        SyncService,
    )

__version__ = "0.1.0.dev0"

_LAZY: dict[str, str] = {
    "SyncedBase": "oversync_sa.metadata",
    "client_projection": "oversync_sa.metadata",
    "server_projection": "oversync_sa.metadata",
    "Actor": "oversync_sa.server",
    "RegisteredTable": "oversync_sa.server",
    "ScopeManager": "oversync_sa.server",
    "ServiceConfig": "oversync_sa.server",
    "SyncService": "oversync_sa.server",
    "BlockingSyncClient": "oversync_sa.client",
    "ClientConfig": "oversync_sa.client",
    "ClientWinsResolver": "oversync_sa.client",
    "ServerWinsResolver": "oversync_sa.client",
    "SyncClient": "oversync_sa.client",
    "SyncTable": "oversync_sa.client",
}

__all__ = [
    "Actor",
    "BlockingSyncClient",
    "ClientConfig",
    "ClientWinsResolver",
    "OversyncError",
    "RegisteredTable",
    "ScopeManager",
    "ServerWinsResolver",
    "ServiceConfig",
    "SyncClient",
    "SyncService",
    "SyncTable",
    "SyncedBase",
    "UnsupportedSchemaError",
    "WireError",
    "__version__",
    "client_projection",
    "errors",
    "server_projection",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'oversync_sa' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
