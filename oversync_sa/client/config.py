"""Client configuration: the managed tables and the tuning knobs of CLIENT.md §1.1.

Everything is a frozen dataclass that validates (and, where the protocol defines a fallback,
normalises) itself at construction, so the rest of the client reads plain, already-effective
values and never re-applies ``<= 0 -> default`` rules at use time. Durations are ``float``
seconds, the unit ``asyncio.sleep`` takes.

Semantic checks that need the database (table exists, key column type, FK closure...) are not
done here but by :mod:`oversync_sa.client.validation`, which reports all of them at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from oversync_sa.client.errors import ConfigFieldError

__all__ = [
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_BACKOFF_MIN",
    "DEFAULT_DOWNLOAD_LIMIT",
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_SNAPSHOT_CHUNK_ROWS",
    "DEFAULT_UPLOAD_LIMIT",
    "BundleChangeWatchMode",
    "ClientConfig",
    "RetryPolicy",
    "SyncTable",
]

DEFAULT_UPLOAD_LIMIT = 1000
DEFAULT_DOWNLOAD_LIMIT = 1000
DEFAULT_SNAPSHOT_CHUNK_ROWS = 1000
DEFAULT_BACKOFF_MIN = 1.0
DEFAULT_BACKOFF_MAX = 60.0

_DEFAULT_MAX_ATTEMPTS = 3
_DEFAULT_INITIAL_BACKOFF = 0.1
_DEFAULT_MAX_RETRY_BACKOFF = 1.0
_DEFAULT_JITTER = 0.2


class BundleChangeWatchMode(StrEnum):
    """Whether background sync may use the server's ``/sync/watch`` stream (§9.4)."""

    OFF = "off"
    AUTO = "auto"


def _require_int(name: str, value: object) -> int:
    # bool is an int subclass; ``upload_limit=True`` is a bug, not the number 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigFieldError(name, f"must be an int, got {type(value).__name__}")
    return value


def _require_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigFieldError(name, f"must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ConfigFieldError(name, f"must be finite, got {seconds!r}")
    return seconds


def _require_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigFieldError(name, f"must be a str, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class SyncTable:
    """One local SQLite table the client keeps in sync.

    ``sync_key_columns`` (ordered) wins over ``sync_key_column`` when non-empty. The current
    runtime supports exactly one key column; that rule, like every other rule needing the
    database, is checked by :func:`oversync_sa.client.validation.validate_managed_tables`.

    ``download_only`` tables receive server rows but reject local writes (their triggers abort
    any write made outside the client's own apply transactions), so nothing is ever captured for
    them.
    """

    table_name: str
    sync_key_column: str | None = None
    sync_key_columns: tuple[str, ...] = ()
    download_only: bool = False

    def __post_init__(self) -> None:
        _require_str("table_name", self.table_name)
        if self.sync_key_column is not None:
            _require_str("sync_key_column", self.sync_key_column)
        # A bare string would otherwise be iterated character by character.
        if isinstance(self.sync_key_columns, str) or not isinstance(
            self.sync_key_columns, Iterable
        ):
            raise ConfigFieldError(
                "sync_key_columns", "must be a sequence of column names, not a single string"
            )
        columns = tuple(self.sync_key_columns)
        for column in columns:
            _require_str("sync_key_columns", column)
        object.__setattr__(self, "sync_key_columns", columns)
        if not isinstance(self.download_only, bool):
            raise ConfigFieldError("download_only", "must be a bool")

    @property
    def name(self) -> str:
        """The table name as used internally: trimmed and lower-cased."""
        return self.table_name.strip().lower()

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The resolved key columns (§1.1): trimmed, blanks and case-insensitive repeats dropped."""
        raw = self.sync_key_columns or (
            (self.sync_key_column,) if self.sync_key_column is not None else ()
        )
        seen: set[str] = set()
        resolved: list[str] = []
        for column in raw:
            trimmed = column.strip()
            if trimmed and trimmed.lower() not in seen:
                seen.add(trimmed.lower())
                resolved.append(trimmed)
        return tuple(resolved)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Transport retry policy (§9.2); values are normalised on construction.

    Normalisation follows the protocol: ``max_attempts <= 0`` -> 3, ``initial_backoff <= 0`` ->
    0.1 s, ``max_backoff <= 0`` -> 1 s, ``max_backoff < initial_backoff`` -> ``initial_backoff``,
    ``jitter_fraction`` clamped to ``[0, 1]``. A disabled policy means a single attempt.
    """

    enabled: bool = True
    max_attempts: int = _DEFAULT_MAX_ATTEMPTS
    initial_backoff: float = _DEFAULT_INITIAL_BACKOFF
    max_backoff: float = _DEFAULT_MAX_RETRY_BACKOFF
    jitter_fraction: float = _DEFAULT_JITTER

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigFieldError("retry_policy.enabled", "must be a bool")
        attempts = _require_int("retry_policy.max_attempts", self.max_attempts)
        initial = _require_seconds("retry_policy.initial_backoff", self.initial_backoff)
        maximum = _require_seconds("retry_policy.max_backoff", self.max_backoff)
        jitter = _require_seconds("retry_policy.jitter_fraction", self.jitter_fraction)
        if attempts <= 0:
            attempts = _DEFAULT_MAX_ATTEMPTS
        if initial <= 0:
            initial = _DEFAULT_INITIAL_BACKOFF
        if maximum <= 0:
            maximum = _DEFAULT_MAX_RETRY_BACKOFF
        maximum = max(maximum, initial)
        object.__setattr__(self, "max_attempts", attempts)
        object.__setattr__(self, "initial_backoff", initial)
        object.__setattr__(self, "max_backoff", maximum)
        object.__setattr__(self, "jitter_fraction", min(max(jitter, 0.0), 1.0))

    @property
    def effective_attempts(self) -> int:
        """How many attempts an operation gets in total (1 when retries are disabled)."""
        return self.max_attempts if self.enabled else 1


#: The built-in policy used when :attr:`ClientConfig.retry_policy` is ``None``.
DEFAULT_RETRY_POLICY = RetryPolicy()


def _positive_or(name: str, value: object, default: int) -> int:
    number = _require_int(name, value)
    return number if number > 0 else default


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Configuration of one client (Go ``Config`` built by ``DefaultConfig``).

    Defaults are the ``DefaultConfig`` values. Fallbacks are applied here, once: limits ``<= 0``
    become 1000; ``watch_fallback_interval <= 0`` becomes ``backoff_max``. Unlike Go, zero or
    negative backoffs are not kept (Go then busy-loops, §1.1 note): they fall back to 1 s / 60 s,
    and ``backoff_max < backoff_min`` is rejected.
    """

    schema: str
    tables: tuple[SyncTable, ...]
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    download_limit: int = DEFAULT_DOWNLOAD_LIMIT
    snapshot_chunk_rows: int = DEFAULT_SNAPSHOT_CHUNK_ROWS
    backoff_min: float = DEFAULT_BACKOFF_MIN
    backoff_max: float = DEFAULT_BACKOFF_MAX
    retry_policy: RetryPolicy | None = None
    bundle_change_watch_mode: BundleChangeWatchMode = BundleChangeWatchMode.OFF
    watch_fallback_interval: float = 0.0
    #: KiB persisted as the database file's default page cache (``PRAGMA default_cache_size``),
    #: which the application's own connections start from: capture triggers spill to a
    #: temporary file per row once a write transaction outgrows SQLite's 2 MiB default. Raised,
    #: never lowered; ``0`` leaves the file's setting alone.
    default_cache_kib: int = 64 * 1024
    _table_index: dict[str, SyncTable] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        schema = _require_str("schema", self.schema).strip()
        if not schema:
            raise ConfigFieldError("schema", "config.Schema must be provided (no default schema)")
        object.__setattr__(self, "schema", schema)

        if isinstance(self.tables, SyncTable | str) or not isinstance(self.tables, Iterable):
            raise ConfigFieldError("tables", "must be a sequence of SyncTable")
        tables = tuple(self.tables)
        for position, table in enumerate(tables):
            if not isinstance(table, SyncTable):
                raise ConfigFieldError(
                    f"tables[{position}]", f"must be a SyncTable, got {type(table).__name__}"
                )
        object.__setattr__(self, "tables", tables)

        for name, default in (
            ("upload_limit", DEFAULT_UPLOAD_LIMIT),
            ("download_limit", DEFAULT_DOWNLOAD_LIMIT),
            ("snapshot_chunk_rows", DEFAULT_SNAPSHOT_CHUNK_ROWS),
        ):
            object.__setattr__(self, name, _positive_or(name, getattr(self, name), default))

        if _require_int("default_cache_kib", self.default_cache_kib) < 0:
            raise ConfigFieldError("default_cache_kib", "must be >= 0 (0 = leave it alone)")

        backoff_min = _require_seconds("backoff_min", self.backoff_min)
        backoff_max = _require_seconds("backoff_max", self.backoff_max)
        backoff_min = backoff_min if backoff_min > 0 else DEFAULT_BACKOFF_MIN
        backoff_max = backoff_max if backoff_max > 0 else DEFAULT_BACKOFF_MAX
        if backoff_max < backoff_min:
            raise ConfigFieldError(
                "backoff_max", f"must be >= backoff_min ({backoff_min}), got {backoff_max}"
            )
        object.__setattr__(self, "backoff_min", backoff_min)
        object.__setattr__(self, "backoff_max", backoff_max)

        if self.retry_policy is not None and not isinstance(self.retry_policy, RetryPolicy):
            raise ConfigFieldError("retry_policy", "must be a RetryPolicy or None")
        try:
            mode = BundleChangeWatchMode(self.bundle_change_watch_mode)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in BundleChangeWatchMode)
            raise ConfigFieldError(
                "bundle_change_watch_mode",
                f"must be one of {allowed}, got {self.bundle_change_watch_mode!r}",
            ) from None
        object.__setattr__(self, "bundle_change_watch_mode", mode)

        interval = _require_seconds("watch_fallback_interval", self.watch_fallback_interval)
        object.__setattr__(
            self, "watch_fallback_interval", interval if interval > 0 else backoff_max
        )
        object.__setattr__(self, "_table_index", {table.name: table for table in tables})

    @classmethod
    def from_models(cls, models: Any, schema: str = "business", **options: Any) -> ClientConfig:
        """The configuration of a client mirroring the synced models of ``models``.

        ``models`` is a :class:`~oversync_sa.metadata.SyncedBase` subclass (or its
        ``MetaData``); every synced table becomes a :class:`SyncTable` keyed by its registered
        sync key, ``download_only`` taken from its registration, listed parents first
        (``sync_registry(models).dependency_order()``). ``schema`` is the *server* schema the
        rows belong to; ``options`` are the remaining :class:`ClientConfig` fields.
        Raises :class:`~oversync_sa.errors.UnsupportedSchemaError` for models that cannot sync.
        """
        # Imported here: the metadata package pulls in the ORM, which plain configs do not need.
        from oversync_sa.metadata import sync_registry

        registry = sync_registry(models)
        tables = tuple(
            SyncTable(
                info.table.name,
                sync_key_column=info.key_column,
                download_only=info.download_only,
            )
            for info in (registry.tables[name] for name in registry.dependency_order())
        )
        return cls(schema, tables, **options)

    @property
    def effective_retry_policy(self) -> RetryPolicy:
        """The caller's policy, or the built-in one (§9.2) when none was given."""
        return self.retry_policy if self.retry_policy is not None else DEFAULT_RETRY_POLICY

    def table(self, name: str) -> SyncTable | None:
        """The configured table called ``name`` (case-insensitive), if any."""
        return self._table_index.get(name.strip().lower())
