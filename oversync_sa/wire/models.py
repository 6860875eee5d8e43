"""msgspec models of every request and response body of the HTTP contract.

Field names and order follow SERVER.md Appendix B (the order Go emits). Members Go tags
``omitempty`` have zero-value defaults and live in ``omit_defaults`` structs, so they disappear
exactly when Go drops them; every other member is required and always written. All structs are
keyword-only because Go's field order puts optional members before required ones.

Row payloads are :class:`msgspec.Raw`: the server writes stored canonical bytes without a
re-parse and the client hashes exactly what it received. An empty ``Raw()`` means "absent" (the
member is omitted), which is how DELETE rows carry no ``payload`` at all; ``Raw(b"null")`` is an
explicit JSON null.

Decoding here is plain msgspec; Go's lenient request decoding (case-insensitive member names,
``null`` as the default) belongs to the HTTP layer.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from msgspec import Raw, Struct, field

from oversync_sa.wire.keys import Op

__all__ = [
    "Bundle",
    "BundleCapabilitiesLimits",
    "BundleChangeEvent",
    "BundleChangeNotification",
    "BundleRow",
    "CapabilitiesResponse",
    "CommittedBundleRowsResponse",
    "ConnectRequest",
    "ConnectResolution",
    "ConnectResponse",
    "ErrorResponse",
    "HealthStatus",
    "LifecycleState",
    "PullResponse",
    "PushConflictDetails",
    "PushConflictResponse",
    "PushRequestRow",
    "PushSessionChunkRequest",
    "PushSessionChunkResponse",
    "PushSessionCommitResponse",
    "PushSessionCreateRequest",
    "PushSessionCreateResponse",
    "PushSessionStatus",
    "RegisteredTableSpec",
    "SnapshotChunkResponse",
    "SnapshotRow",
    "SnapshotSession",
    "SnapshotSessionCreateRequest",
    "SnapshotSourceReplacement",
    "SourceReplacementReason",
    "SourceRetiredResponse",
    "StatusResponse",
    "SyncFeatures",
    "SyncKey",
]

#: The wire key object of a row: ``{"<sync key column>": "<key text>"}``.
SyncKey = dict[str, str]

_ABSENT = Raw()
_JSON_NULL = Raw(b"null")


class ConnectResolution(enum.StrEnum):
    """Outcome of ``POST /sync/connect`` (SERVER.md §4.2)."""

    REMOTE_AUTHORITATIVE = "remote_authoritative"
    INITIALIZE_LOCAL = "initialize_local"
    INITIALIZE_EMPTY = "initialize_empty"
    RETRY_LATER = "retry_later"


class PushSessionStatus(enum.StrEnum):
    """``status`` of a push-session create response."""

    STAGING = "staging"
    ALREADY_COMMITTED = "already_committed"


class SourceReplacementReason(enum.StrEnum):
    """Why a client rotates its source when creating a snapshot session (SERVER.md §7.2)."""

    HISTORY_PRUNED = "history_pruned"
    SOURCE_SEQUENCE_OUT_OF_ORDER = "source_sequence_out_of_order"
    SOURCE_SEQUENCE_CHANGED = "source_sequence_changed"
    SOURCE_RETIRED = "source_retired"


class HealthStatus(enum.StrEnum):
    """``status`` of ``/syncx/status`` and ``/syncx/health``."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class LifecycleState(enum.StrEnum):
    """Service lifecycle reported by ``/syncx/status``."""

    RUNNING = "running"
    SHUTTING_DOWN = "shutting_down"
    CLOSED = "closed"


class _Always(Struct):
    """Base of bodies whose every member is always written."""


class _OmitEmpty(Struct, omit_defaults=True):
    """Base of bodies with Go ``omitempty`` members (those are the ones with defaults)."""


# ---------------------------------------------------------------------------------- errors


class ErrorResponse(_Always, kw_only=True):
    """The generic error body ``{"error": <code>, "message": <text>}``."""

    error: str
    message: str


class SourceRetiredResponse(_OmitEmpty, kw_only=True):
    """409 ``source_retired``: names the retired source and, when known, its replacement."""

    error: Literal["source_retired"]
    message: str
    source_id: str
    replaced_by_source_id: str = ""


class PushConflictDetails(_Always, kw_only=True):
    """The row a push conflicted on and the server's current version of it (SERVER.md §5.4).

    ``server_row`` is always written: the current row object, or ``null`` when the row is
    missing or deleted.
    """

    schema: str
    table: str
    key: SyncKey
    op: Op
    base_row_version: int
    server_row_version: int
    server_row_deleted: bool
    server_row: Raw = _JSON_NULL


class PushConflictResponse(_OmitEmpty, kw_only=True):
    """409 ``push_conflict`` with the structured conflict."""

    error: Literal["push_conflict"]
    message: str
    conflict: PushConflictDetails | None = None


# --------------------------------------------------------------------------------- connect


class ConnectRequest(_Always, kw_only=True):
    """Body of ``POST /sync/connect``; a missing member means ``false``."""

    has_local_pending_rows: bool = False


class ConnectResponse(_OmitEmpty, kw_only=True):
    """Connect outcome; lease members only for ``initialize_local`` and ``retry_later``.

    ``lease_expires_at`` is a wire timestamp (see :func:`format_timestamp`).
    """

    resolution: ConnectResolution
    initialization_id: str = ""
    lease_expires_at: str = ""
    retry_after_seconds: int = 0


# ------------------------------------------------------------------------------------ push


class PushSessionCreateRequest(_OmitEmpty, kw_only=True):
    """Body of ``POST /sync/push-sessions``."""

    source_bundle_id: int
    planned_row_count: int
    initialization_id: str = ""


class PushSessionCreateResponse(_OmitEmpty, kw_only=True):
    """Either a ``staging`` session (push id, counts) or an ``already_committed`` bundle.

    One shape for both variants, as Go has: the members of the other variant stay zero and are
    omitted.
    """

    push_id: str = ""
    status: PushSessionStatus
    planned_row_count: int = 0
    next_expected_row_ordinal: int = 0
    bundle_seq: int = 0
    source_id: str = ""
    source_bundle_id: int = 0
    row_count: int = 0
    bundle_hash: str = ""


class PushRequestRow(_OmitEmpty, kw_only=True):
    """One uploaded row. ``key`` values are ``Any`` so the server can report non-strings itself.

    ``op`` is a plain string because the server trims and upper-cases it before validating.
    ``payload`` is omitted (empty ``Raw``) for DELETE rows.
    """

    schema: str
    table: str
    key: dict[str, Any]
    op: str
    base_row_version: int
    payload: Raw = _ABSENT


class PushSessionChunkRequest(_Always, kw_only=True):
    """Body of ``POST /sync/push-sessions/{push_id}/chunks``."""

    start_row_ordinal: int
    rows: list[PushRequestRow]


class PushSessionChunkResponse(_Always, kw_only=True):
    """Chunk accepted; ``push_id`` echoes the path value as received."""

    push_id: str
    next_expected_row_ordinal: int


class PushSessionCommitResponse(_Always, kw_only=True):
    """The bundle a push session committed."""

    bundle_seq: int
    source_id: str
    source_bundle_id: int
    row_count: int
    bundle_hash: str


# ---------------------------------------------------------------------- bundles and pull


class BundleRow(_OmitEmpty, kw_only=True, gc=False):
    """One committed row; ``payload`` is absent (empty ``Raw``) for DELETE.

    Untracked by the cycle collector (its members cannot form a cycle): a pulled page holds
    thousands of rows for as long as its bundles take to apply, long enough to be promoted to
    the oldest generation, where tracked rows would trigger a full collection of the whole
    process every few pages.
    """

    schema: str
    table: str
    key: SyncKey
    op: Op
    row_version: int
    payload: Raw = _ABSENT


class Bundle(_OmitEmpty, kw_only=True):
    """A complete committed bundle in a pull response."""

    bundle_seq: int
    source_id: str
    source_bundle_id: int
    row_count: int = 0
    bundle_hash: str = ""
    rows: list[BundleRow]


class CommittedBundleRowsResponse(_Always, kw_only=True):
    """One page of ``GET /sync/committed-bundles/{bundle_seq}/rows``."""

    bundle_seq: int
    source_id: str
    source_bundle_id: int
    row_count: int
    bundle_hash: str
    rows: list[BundleRow]
    next_row_ordinal: int
    has_more: bool


class PullResponse(_Always, kw_only=True):
    """One page of ``GET /sync/pull``."""

    stable_bundle_seq: int
    bundles: list[Bundle]
    has_more: bool


# ------------------------------------------------------------------------------ snapshots


class SnapshotSourceReplacement(_Always, kw_only=True):
    """Source rotation requested together with a snapshot session."""

    previous_source_id: str
    new_source_id: str
    reason: SourceReplacementReason


class SnapshotSessionCreateRequest(_OmitEmpty, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /sync/snapshot-sessions``; unknown members are rejected, as in Go."""

    source_replacement: SnapshotSourceReplacement | None = None


class SnapshotSession(_OmitEmpty, kw_only=True):
    """A frozen snapshot session; ``expires_at`` is a wire timestamp."""

    snapshot_id: str
    snapshot_bundle_seq: int
    row_count: int
    byte_count: int = 0
    expires_at: str


class SnapshotRow(_Always, kw_only=True):
    """One live row of a snapshot; ``payload`` is always present."""

    schema: str
    table: str
    key: SyncKey
    row_version: int
    payload: Raw


class SnapshotChunkResponse(_Always, kw_only=True):
    """One page of ``GET /sync/snapshot-sessions/{snapshot_id}``."""

    snapshot_id: str
    snapshot_bundle_seq: int
    rows: list[SnapshotRow]
    next_row_ordinal: int
    has_more: bool


# ------------------------------------------------------------------ capabilities / status


class SyncFeatures(_Always, kw_only=True):
    """The feature flags object (Go writes a map, hence the sorted member order).

    Decoding leaves unknown flags out and missing ones ``False``, so a client only sees
    ``connect_lifecycle`` when the server really advertises it. Use :meth:`server_defaults` for
    the values this server advertises (SERVER.md §6.4).
    """

    accepted_push_replay_visibility: bool = False
    bundle_change_watch: bool = False
    bundle_pull: bool = False
    bundle_push: bool = False
    capabilities_endpoint: bool = False
    committed_bundle_row_fetch: bool = False
    committed_bundle_visibility: bool = False
    connect_lifecycle: bool = False
    graceful_shutdown: bool = False
    history_pruned_errors: bool = False
    history_pruned_visibility: bool = False
    push_session_chunking: bool = False
    registered_write_rejection_enforced: bool = False
    retained_floor_visibility: bool = False
    retained_window_visibility: bool = False
    scope_initialization_leases: bool = False
    server_checkpoint_tracking: bool = False
    snapshot_chunking: bool = False
    status_endpoint: bool = False
    structured_sync_keys: bool = False

    @classmethod
    def server_defaults(cls, *, bundle_change_watch: bool) -> SyncFeatures:
        """The 20 flags a conforming server advertises; only the watch flag varies."""
        flags = dict.fromkeys(cls.__struct_fields__, True)
        flags["bundle_change_watch"] = bundle_change_watch
        flags["server_checkpoint_tracking"] = False
        return cls(**flags)


class BundleCapabilitiesLimits(_OmitEmpty, kw_only=True):
    """Advertised limits; zero means "not configured" and is omitted."""

    max_rows_per_bundle: int = 0
    max_bytes_per_bundle: int = 0
    max_bundles_per_pull: int = 0
    default_rows_per_push_chunk: int = 0
    max_rows_per_push_chunk: int = 0
    push_session_ttl_seconds: int = 0
    default_rows_per_committed_bundle_chunk: int = 0
    max_rows_per_committed_bundle_chunk: int = 0
    default_rows_per_snapshot_chunk: int = 0
    max_rows_per_snapshot_chunk: int = 0
    snapshot_session_ttl_seconds: int = 0
    max_rows_per_snapshot_session: int = 0
    max_bytes_per_snapshot_session: int = 0
    initialization_lease_ttl_seconds: int = 0


class RegisteredTableSpec(_OmitEmpty, kw_only=True):
    """One registered table as advertised by capabilities."""

    schema: str
    table: str
    sync_key_columns: list[str] = field(default_factory=list)


class CapabilitiesResponse(_OmitEmpty, kw_only=True):
    """Body of ``GET /sync/capabilities``."""

    protocol_version: str
    schema_version: int
    app_name: str = ""
    registered_tables: list[str] = field(default_factory=list)
    registered_table_specs: list[RegisteredTableSpec] = field(default_factory=list)
    features: SyncFeatures
    bundle_limits: BundleCapabilitiesLimits | None = None


class StatusResponse(_Always, kw_only=True):
    """Body of ``/syncx/status`` and ``/syncx/health``; every member always present."""

    status: HealthStatus
    version: str
    app_name: str
    lifecycle: LifecycleState
    accepting_operations: bool
    inflight_operations: int
    registered_tables: list[str]
    features: SyncFeatures
    user_state_retention_floor_ahead_count: int
    latest_bundle_seq_max: int
    retained_bundle_floor_min: int
    retained_bundle_floor_max: int
    retained_bundle_window_min: int
    retained_bundle_window_max: int
    history_pruned_error_count: int
    accepted_push_replay_count: int
    rejected_registered_write_count: int
    committed_bundle_count: int
    committed_bundle_bytes: int


# ----------------------------------------------------------------------------------- watch


class BundleChangeEvent(_OmitEmpty, kw_only=True):
    """``data`` of a ``/sync/watch`` SSE event: a wake-up hint, never row data."""

    bundle_seq: int
    source_id: str = ""
    source_bundle_id: int = 0


class BundleChangeNotification(_OmitEmpty, kw_only=True):
    """PostgreSQL NOTIFY payload between servers (SERVER.md §7.4); not sent to clients."""

    user_pk: int
    bundle_seq: int
    source_id: str = ""
    source_bundle_id: int = 0

