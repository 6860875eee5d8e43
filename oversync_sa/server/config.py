"""Server configuration (SERVER.md §2.1, Appendix C), normalised once at construction.

:class:`ServiceConfig` is immutable. Its constructor applies every "≤ 0 falls back to the
default" rule of Appendix C in one step (``__post_init__``), so the rest of the server reads
effective values only and never re-checks for zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from oversync_sa.errors import ConfigurationError
from oversync_sa.server.observer import SyncObserver
from oversync_sa.server.stages import StageTiming

__all__ = [
    "DEFAULT_APP_NAME",
    "DEFAULT_NOTIFY_CHANNEL",
    "BundleChangeWatchConfig",
    "RegisteredTable",
    "ServiceConfig",
]

DEFAULT_APP_NAME: Final = "go-oversync-app"
DEFAULT_SCHEMA_VERSION: Final = 1
DEFAULT_NOTIFY_CHANNEL: Final = "oversync_bundle_change_v1"
DEFAULT_HEARTBEAT: Final = timedelta(seconds=25)
_MAX_CHANNEL_BYTES: Final = 63

_DEFAULT_ROWS_PER_CHUNK: Final = 1000
_MAX_ROWS_PER_CHUNK: Final = 5000
_DEFAULT_TTL: Final = timedelta(minutes=15)
_DEFAULT_RETAINED_BUNDLES: Final = 10000
_DEFAULT_PRUNE_BATCH: Final = 1000


def _norm(value: str) -> str:
    return value.strip().lower()


def _resolve_key_column(
    schema: str, table: str, single: str | None, many: Sequence[str] | None
) -> str:
    if single is not None and many is not None:
        raise ConfigurationError(
            f"registered table {schema}.{table}: give sync_key_column or sync_key_columns, "
            "not both"
        )
    candidates: list[str] = []
    for raw in [single] if single is not None else list(many or ()):
        column = _norm(raw)
        if column and column not in candidates:
            candidates.append(column)
    if len(candidates) != 1:
        raise ConfigurationError(
            f"registered table {schema}.{table}: sync_key_columns must resolve to exactly one "
            f"sync key column, got {candidates}"
        )
    if candidates[0] == "_sync_scope_id":
        raise ConfigurationError(
            f"registered table {schema}.{table}: sync_key_column cannot use hidden scope "
            "column _sync_scope_id"
        )
    return candidates[0]


@dataclass(frozen=True, slots=True, init=False)
class RegisteredTable:
    """A table the server syncs, normalised per §2.1.

    Accepts either ``sync_key_column="id"`` or Go's list form ``sync_key_columns=["id"]``; the
    list is trimmed, lower-cased, de-duplicated and must resolve to exactly one column.
    """

    schema: str
    table: str
    sync_key_column: str

    def __init__(
        self,
        schema: str,
        table: str,
        sync_key_column: str | None = None,
        *,
        sync_key_columns: Sequence[str] | None = None,
    ) -> None:
        norm_schema = _norm(schema) or "public"
        norm_table = _norm(table)
        if not norm_table:
            raise ConfigurationError("registered_tables: table name must not be empty")
        key = _resolve_key_column(norm_schema, norm_table, sync_key_column, sync_key_columns)
        object.__setattr__(self, "schema", norm_schema)
        object.__setattr__(self, "table", norm_table)
        object.__setattr__(self, "sync_key_column", key)

    @property
    def name(self) -> str:
        """``"schema.table"``, the key used by the catalog and ``table_id`` ordering."""
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True, slots=True)
class BundleChangeWatchConfig:
    """Bundle-change watch settings (§7.4), validated per §2.1."""

    enabled: bool = False
    notify_channel: str = DEFAULT_NOTIFY_CHANNEL
    heartbeat_interval: timedelta = DEFAULT_HEARTBEAT

    def __post_init__(self) -> None:
        channel = self.notify_channel or DEFAULT_NOTIFY_CHANNEL
        if "\x00" in channel:
            raise ConfigurationError(
                "bundle_change_watch.notify_channel must not contain a NUL byte"
            )
        if len(channel.encode("utf-8")) > _MAX_CHANNEL_BYTES:
            raise ConfigurationError(
                f"bundle_change_watch.notify_channel must be at most {_MAX_CHANNEL_BYTES} bytes"
            )
        heartbeat = self.heartbeat_interval
        if heartbeat == timedelta(0):
            heartbeat = DEFAULT_HEARTBEAT
        if self.enabled and heartbeat <= timedelta(0):
            raise ConfigurationError(
                "bundle_change_watch.heartbeat_interval: heartbeat interval must be positive "
                "when enabled"
            )
        object.__setattr__(self, "notify_channel", channel)
        object.__setattr__(self, "heartbeat_interval", heartbeat)


def _positive_or(value: int, default: int) -> int:
    return value if value > 0 else default


def _positive_td_or(value: timedelta, default: timedelta) -> timedelta:
    return value if value > timedelta(0) else default


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Everything :class:`~oversync_sa.server.SyncService` needs, with Appendix C defaults.

    ``stage_metrics`` is Go's optional synchronous stage-timing recorder (§7.5).
    ``observer`` receives operation, push, conflict and watch events
    (:mod:`oversync_sa.server.observer`); ``None`` reports nothing.
    Knobs marked "≤ 0 falls back to the default" in Appendix C are replaced here; the others
    keep the given value (``max_rows_per_bundle`` is advertised as configured, snapshot-session
    limits ≤ 0 mean unlimited, ``upload_lock_timeout`` ≤ 0 means off).

    ``migrate_table_catalog`` (off by default, like Go's sticky catalog of §2.3) lets
    :meth:`~oversync_sa.server.SyncService.bootstrap` renumber an existing ``sync.table_catalog``
    to the configured tables instead of failing closed; see
    :mod:`oversync_sa.server.catalog_migration`.
    """

    registered_tables: tuple[RegisteredTable, ...] = ()
    app_name: str = DEFAULT_APP_NAME
    max_supported_schema_version: int = DEFAULT_SCHEMA_VERSION
    max_rows_per_bundle: int = 0
    max_bytes_per_bundle: int = 0
    default_rows_per_push_chunk: int = _DEFAULT_ROWS_PER_CHUNK
    max_rows_per_push_chunk: int = _MAX_ROWS_PER_CHUNK
    push_session_ttl: timedelta = _DEFAULT_TTL
    initialization_lease_ttl: timedelta = _DEFAULT_TTL
    default_rows_per_committed_bundle_chunk: int = _DEFAULT_ROWS_PER_CHUNK
    max_rows_per_committed_bundle_chunk: int = _MAX_ROWS_PER_CHUNK
    default_rows_per_snapshot_chunk: int = _DEFAULT_ROWS_PER_CHUNK
    max_rows_per_snapshot_chunk: int = _MAX_ROWS_PER_CHUNK
    snapshot_session_ttl: timedelta = _DEFAULT_TTL
    max_rows_per_snapshot_session: int = 0
    max_bytes_per_snapshot_session: int = 0
    retained_bundles_per_user: int = _DEFAULT_RETAINED_BUNDLES
    retention_prune_batch_size: int = _DEFAULT_PRUNE_BATCH
    upload_lock_timeout: timedelta = timedelta(0)
    dependency_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    stage_metrics: Callable[[StageTiming], None] | None = None
    log_stage_timings: bool = False
    bundle_change_watch: BundleChangeWatchConfig = field(default_factory=BundleChangeWatchConfig)
    migrate_table_catalog: bool = False
    observer: SyncObserver | None = None

    def __post_init__(self) -> None:
        tables = tuple(self.registered_tables)
        for table in tables:
            if not isinstance(table, RegisteredTable):
                raise ConfigurationError(
                    f"registered_tables: expected RegisteredTable, got {type(table).__name__}"
                )
        seen: set[str] = set()
        for table in tables:
            if table.name in seen:
                raise ConfigurationError(f"registered_tables: {table.name} is registered twice")
            seen.add(table.name)
        set_ = object.__setattr__
        set_(self, "registered_tables", tables)
        set_(
            self,
            "dependency_overrides",
            {
                _norm(child): tuple(_norm(p) for p in parents)
                for child, parents in self.dependency_overrides.items()
            },
        )
        for name in (
            "default_rows_per_push_chunk",
            "default_rows_per_committed_bundle_chunk",
            "default_rows_per_snapshot_chunk",
        ):
            set_(self, name, _positive_or(getattr(self, name), _DEFAULT_ROWS_PER_CHUNK))
        for name in (
            "max_rows_per_push_chunk",
            "max_rows_per_committed_bundle_chunk",
            "max_rows_per_snapshot_chunk",
        ):
            set_(self, name, _positive_or(getattr(self, name), _MAX_ROWS_PER_CHUNK))
        for name in ("push_session_ttl", "initialization_lease_ttl", "snapshot_session_ttl"):
            set_(self, name, _positive_td_or(getattr(self, name), _DEFAULT_TTL))
        set_(
            self,
            "retained_bundles_per_user",
            _positive_or(self.retained_bundles_per_user, _DEFAULT_RETAINED_BUNDLES),
        )
        set_(
            self,
            "retention_prune_batch_size",
            _positive_or(self.retention_prune_batch_size, _DEFAULT_PRUNE_BATCH),
        )

    @property
    def upload_lock_timeout_enabled(self) -> bool:
        """``SET LOCAL lock_timeout`` is only issued for a positive timeout."""
        return self.upload_lock_timeout > timedelta(0)

    @classmethod
    def from_models(
        cls, base_or_metadata: Any, *, schema: str = "business", **overrides: Any
    ) -> ServiceConfig:
        """Build a config whose registered tables are the SyncedBase models, in declaration order.

        ``schema`` is used for tables that the registry reports without a schema.
        """
        from oversync_sa.metadata import sync_registry  # deferred: the ORM layer is optional

        if "registered_tables" in overrides:
            raise ConfigurationError(
                "registered_tables: from_models derives them; do not pass them as well"
            )
        registry = sync_registry(base_or_metadata)
        tables = [_registered_from_info(info, schema) for info in registry.tables.values()]
        return cls(registered_tables=tuple(tables), **overrides)


def _registered_from_info(info: Any, default_schema: str) -> RegisteredTable:
    name: str = info.name
    table_schema = getattr(info, "schema", None)
    if table_schema is None and "." in name:
        table_schema, name = name.split(".", 1)
    return RegisteredTable(table_schema or default_schema, name, info.key_column)

