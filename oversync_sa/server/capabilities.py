"""``GET /sync/capabilities`` (SERVER.md §6.4): what this server speaks, from config alone.

No database access and no actor required. The Go client refuses to attach unless
``features.connect_lifecycle`` is true and checks ``features.bundle_change_watch`` before it opens
a watch; that one flag may depend on the caller through an optional policy hook.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Final

from oversync_sa.server.config import ServiceConfig
from oversync_sa.server.pull import MAX_BUNDLES_PER_PULL
from oversync_sa.server.read_support import ActorLike
from oversync_sa.wire.models import (
    BundleCapabilitiesLimits,
    CapabilitiesResponse,
    RegisteredTableSpec,
    SyncFeatures,
)

__all__ = [
    "PROTOCOL_VERSION",
    "WatchPolicy",
    "build_capabilities",
    "bundle_limits",
    "capabilities",
    "registered_table_names",
    "server_features",
]

PROTOCOL_VERSION: Final = "v1"

#: Per-actor gate of the bundle-change watch (Go's ``BundleChangeWatchAllowed``); sync or async.
WatchPolicy = Callable[[ActorLike], "bool | Awaitable[bool]"]

_ONE_SECOND: Final = timedelta(seconds=1)


def _seconds(value: timedelta) -> int:
    # Whole seconds, truncated, as Go's Duration.Seconds() converted to int64.
    return value // _ONE_SECOND


def registered_table_names(config: ServiceConfig) -> list[str]:
    """Sorted ``"schema.table"`` names of the registered tables."""
    return sorted(t.name for t in config.registered_tables)


def server_features(config: ServiceConfig, *, watch_allowed: bool = True) -> SyncFeatures:
    """The 20 feature flags; watch is on only when enabled in config *and* allowed."""
    return SyncFeatures.server_defaults(
        bundle_change_watch=config.bundle_change_watch.enabled and watch_allowed
    )


def bundle_limits(config: ServiceConfig) -> BundleCapabilitiesLimits:
    """Advertised limits; zero-valued ones are omitted on the wire.

    Snapshot-session limits ≤ 0 mean "unlimited" and are advertised as absent; the per-bundle
    limits are advertised exactly as configured (they are not enforced).
    """
    return BundleCapabilitiesLimits(
        max_rows_per_bundle=config.max_rows_per_bundle,
        max_bytes_per_bundle=config.max_bytes_per_bundle,
        max_bundles_per_pull=MAX_BUNDLES_PER_PULL,
        default_rows_per_push_chunk=config.default_rows_per_push_chunk,
        max_rows_per_push_chunk=config.max_rows_per_push_chunk,
        push_session_ttl_seconds=_seconds(config.push_session_ttl),
        default_rows_per_committed_bundle_chunk=config.default_rows_per_committed_bundle_chunk,
        max_rows_per_committed_bundle_chunk=config.max_rows_per_committed_bundle_chunk,
        default_rows_per_snapshot_chunk=config.default_rows_per_snapshot_chunk,
        max_rows_per_snapshot_chunk=config.max_rows_per_snapshot_chunk,
        snapshot_session_ttl_seconds=_seconds(config.snapshot_session_ttl),
        max_rows_per_snapshot_session=max(config.max_rows_per_snapshot_session, 0),
        max_bytes_per_snapshot_session=max(config.max_bytes_per_snapshot_session, 0),
        initialization_lease_ttl_seconds=_seconds(config.initialization_lease_ttl),
    )


def build_capabilities(
    config: ServiceConfig, *, watch_allowed: bool = True
) -> CapabilitiesResponse:
    """The capabilities body for an already decided watch policy outcome."""
    tables = sorted(config.registered_tables, key=lambda t: t.name)
    return CapabilitiesResponse(
        protocol_version=PROTOCOL_VERSION,
        schema_version=config.max_supported_schema_version,
        app_name=config.app_name,
        registered_tables=[t.name for t in tables],
        registered_table_specs=[
            RegisteredTableSpec(
                schema=t.schema, table=t.table, sync_key_columns=[t.sync_key_column]
            )
            for t in tables
        ],
        features=server_features(config, watch_allowed=watch_allowed),
        bundle_limits=bundle_limits(config),
    )


async def capabilities(
    config: ServiceConfig,
    actor: ActorLike | None = None,
    *,
    watch_policy: WatchPolicy | None = None,
) -> CapabilitiesResponse:
    """Capabilities as seen by ``actor`` (``None`` when the request carries no valid actor).

    The policy is consulted only when the watch is enabled and an actor is known; without a
    policy every actor is allowed.
    """
    allowed = True
    if watch_policy is not None and actor is not None and config.bundle_change_watch.enabled:
        verdict = watch_policy(actor)
        allowed = bool(await verdict) if inspect.isawaitable(verdict) else bool(verdict)
    return build_capabilities(config, watch_allowed=allowed)
