"""Public result values of the client (CLIENT.md §10.1-10.2).

Normal outcomes (``retry_later``, a detach blocked by unsynced data, paused or already-current
sync) are results, never exceptions. Enum string values are protocol facts and match Go.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "AttachOutcome",
    "AttachResult",
    "AttachStatus",
    "AuthorityStatus",
    "DetachOutcome",
    "DetachResult",
    "PendingSyncStatus",
    "PushOutcome",
    "PushReport",
    "PushTransferStats",
    "RemoteSyncOutcome",
    "RemoteSyncReport",
    "RestoreSummary",
    "SourceInfo",
    "SourceRecoveryCode",
    "SyncCounters",
    "SyncReport",
    "SyncStatus",
    "SyncThenDetachResult",
]


class AttachStatus(StrEnum):
    CONNECTED = "connected"
    RETRY_LATER = "retry_later"


class AttachOutcome(StrEnum):
    RESUMED_ATTACHED_STATE = "resumed_attached_state"
    USED_REMOTE_STATE = "used_remote_state"
    SEEDED_FROM_LOCAL = "seeded_from_local"
    STARTED_EMPTY = "started_empty"


class DetachOutcome(StrEnum):
    DETACHED = "detached"
    BLOCKED_UNSYNCED_DATA = "blocked_unsynced_data"


class AuthorityStatus(StrEnum):
    PENDING_LOCAL_SEED = "pending_local_seed"
    AUTHORITATIVE_EMPTY = "authoritative_empty"
    AUTHORITATIVE_MATERIALIZED = "authoritative_materialized"


class PushOutcome(StrEnum):
    NO_CHANGE = "no_change"
    COMMITTED = "committed"
    SKIPPED_PAUSED = "skipped_paused"


class RemoteSyncOutcome(StrEnum):
    ALREADY_AT_TARGET = "already_at_target"
    APPLIED_INCREMENTAL = "applied_incremental"
    APPLIED_SNAPSHOT = "applied_snapshot"
    SKIPPED_PAUSED = "skipped_paused"


class SourceRecoveryCode(StrEnum):
    HISTORY_PRUNED = "history_pruned"
    SOURCE_SEQUENCE_OUT_OF_ORDER = "source_sequence_out_of_order"
    SOURCE_SEQUENCE_CHANGED = "source_sequence_changed"
    SOURCE_RETIRED = "source_retired"


@dataclass(frozen=True, slots=True)
class PendingSyncStatus:
    """Local data not yet known to the server; attached + pending blocks ``detach()``."""

    has_pending_sync_data: bool
    pending_row_count: int
    blocks_detach: bool


@dataclass(frozen=True, slots=True)
class SyncCounters:
    """What this client instance did since it was created (in memory: a restart resets them).

    ``pushes``: push calls that committed a bundle. ``pulls``: pulls that applied bundles or
    found the client already current (a pull that fell back to a snapshot counts as a rebuild
    instead). ``rebuilds``: completed snapshot rebuilds, explicit or automatic (pruned history,
    source recovery). ``conflicts_resolved``: push conflicts the resolver settled.
    """

    pushes: int = 0
    pulls: int = 0
    rebuilds: int = 0
    conflicts_resolved: int = 0


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """The client's sync state.

    ``dirty_queue_depth`` is the number of local changes not yet on the server (dirty rows plus
    rows of a prepared outbox bundle). ``counters`` are the client's in-memory
    :class:`SyncCounters` at the time the status was read.
    """

    authority: AuthorityStatus
    pending: PendingSyncStatus
    last_bundle_seq_seen: int
    dirty_queue_depth: int = 0
    counters: SyncCounters = SyncCounters()


@dataclass(frozen=True, slots=True)
class RestoreSummary:
    """A snapshot that replaced local state: its bundle seq and row count."""

    bundle_seq: int
    row_count: int


@dataclass(frozen=True, slots=True)
class AttachResult:
    """``outcome`` is ``None`` and ``retry_after`` (seconds) set only for ``retry_later``."""

    status: AttachStatus
    outcome: AttachOutcome | None = None
    retry_after: float = 0.0
    sync_status: SyncStatus | None = None
    restore: RestoreSummary | None = None


@dataclass(frozen=True, slots=True)
class DetachResult:
    outcome: DetachOutcome
    pending_row_count: int = 0


@dataclass(frozen=True, slots=True)
class PushReport:
    outcome: PushOutcome
    status: SyncStatus | None = None


@dataclass(slots=True)
class PushTransferStats:
    """Push diagnostics counters (§10.2), cumulative until :meth:`reset`.

    ``sessions_created`` counts staging sessions only (not ``already_committed`` answers).
    """

    sessions_created: int = 0
    chunks_uploaded: int = 0
    committed_bundle_chunks_read: int = 0

    def reset(self) -> None:
        self.sessions_created = self.chunks_uploaded = self.committed_bundle_chunks_read = 0


@dataclass(frozen=True, slots=True)
class RemoteSyncReport:
    """``restore`` is set only for ``applied_snapshot``."""

    outcome: RemoteSyncOutcome
    status: SyncStatus | None = None
    restore: RestoreSummary | None = None


@dataclass(frozen=True, slots=True)
class SyncReport:
    push_outcome: PushOutcome
    remote_outcome: RemoteSyncOutcome
    status: SyncStatus | None = None
    restore: RestoreSummary | None = None


@dataclass(frozen=True, slots=True)
class SyncThenDetachResult:
    last_sync: SyncReport | None
    detach: DetachResult
    sync_rounds: int
    remaining_pending_row_count: int

    @property
    def is_success(self) -> bool:
        return self.detach.outcome is DetachOutcome.DETACHED


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Debug view of the managed source identity; ``source_recovery_reason`` is ``None`` if none."""

    current_source_id: str
    rebuild_required: bool
    source_recovery_required: bool
    source_recovery_reason: SourceRecoveryCode | None
