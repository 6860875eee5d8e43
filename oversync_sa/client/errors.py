"""Errors raised by the SQLite client's building blocks.

All derive from :class:`oversync_sa.errors.OversyncError`. Encoding errors carry the table, column
and (when known) the row key so a failing push or pull can be traced to one row without logging
payloads.
"""

from __future__ import annotations

from oversync_sa.errors import ConfigurationError, OversyncError

__all__ = [
    "AttachBindingConflictError",
    "AttachLifecycleUnsupportedError",
    "AttachLocalStateConflictError",
    "AttachRequiredError",
    "ClientClosedError",
    "ConfigFieldError",
    "DatabaseAlreadyOwnedError",
    "DatabaseInitializationError",
    "DestructiveTransitionInProgressError",
    "DirtyStateRejectedError",
    "KeyEncodingError",
    "LifecyclePreconditionError",
    "OpenRequiredError",
    "PayloadEncodingError",
    "PendingPushReplayError",
    "ProtocolViolationError",
    "RebuildRequiredError",
    "RemoteReplacePendingError",
    "RetryExhaustedError",
    "SourceRecoveryRequiredError",
    "SourceReplacementDivergedError",
    "SyncOperationInProgressError",
    "UnexpectedStatusError",
]


class ConfigFieldError(ConfigurationError):
    """One field of :class:`~oversync_sa.client.config.ClientConfig` (or a nested value) is invalid.

    ``field`` is the dotted path of the offending field, e.g. ``"retry_policy.jitter_fraction"``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class DatabaseInitializationError(OversyncError):
    """The local metadata tables could not be created on the given connection."""


class KeyEncodingError(OversyncError, ValueError):
    """A sync key could not be converted between its local, SQL and wire forms.

    ``value`` is the offending key value as received (local PK string or wire value).
    """

    def __init__(self, table: str, key_column: str, value: object, message: str) -> None:
        self.table = table
        self.key_column = key_column
        self.value = value
        super().__init__(f"{table}.{key_column}: {message}")


class PayloadEncodingError(OversyncError, ValueError):
    """A row payload could not be converted between its local and wire encodings.

    ``column`` is ``None`` when the payload as a whole is malformed (not an object, wrong column
    set). ``key`` is the local PK of the row when the caller knows it.
    """

    def __init__(
        self,
        table: str,
        message: str,
        *,
        column: str | None = None,
        key: str | None = None,
    ) -> None:
        self.table = table
        self.column = column
        self.key = key
        where = table if key is None else f"{table} key {key!r}"
        super().__init__(f"{where}: {message}")


# --- Lifecycle, transport and sync-operation errors (CLIENT.md §10.3) -----------------------


class DatabaseAlreadyOwnedError(OversyncError):
    """Another live client in this process already owns the SQLite database (§4.1)."""

    def __init__(self, database: str) -> None:
        self.database = database
        super().__init__(f"database {database} is already owned by another oversync client")


class ClientClosedError(OversyncError):
    """The client was closed (or sync was uninstalled); create a new client to continue."""

    def __init__(self) -> None:
        super().__init__("oversqlite client has been closed")


class SyncOperationInProgressError(OversyncError):
    """Another operation of the same client is running; the call did nothing (§4.1).

    Expected contention, not a failure: background loops treat it as benign.
    """

    def __init__(self, operation: str = "") -> None:
        self.operation = operation
        suffix = f" ({operation})" if operation else ""
        super().__init__(f"another sync operation is already in progress{suffix}")


class LifecyclePreconditionError(OversyncError):
    """Base of the three lifecycle-precondition errors (Go ``IsLifecyclePreconditionError``)."""


class OpenRequiredError(LifecyclePreconditionError):
    """``open()`` has not run on this client yet."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f"{operation} requires Open() first")


class AttachRequiredError(LifecyclePreconditionError):
    """The client has no connected, attached session for the operation."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f"{operation} requires an attached, connected session (call Attach)")


class DestructiveTransitionInProgressError(LifecyclePreconditionError):
    """A destructive lifecycle transition is pending; sync operations must wait for it."""

    def __init__(self, transition_kind: str) -> None:
        self.transition_kind = transition_kind
        super().__init__(f"destructive lifecycle transition {transition_kind!r} is in progress")


class AttachLifecycleUnsupportedError(OversyncError):
    """The server does not offer the connect lifecycle (capabilities or connect missing)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"server does not support the attach lifecycle: {reason}")


class AttachBindingConflictError(OversyncError):
    """The database is attached to another user; ``detach()`` first."""

    def __init__(self, attached_user_id: str, requested_user_id: str) -> None:
        self.attached_user_id = attached_user_id
        self.requested_user_id = requested_user_id
        super().__init__(
            f"database is attached to user {attached_user_id!r};"
            f" detach before attaching {requested_user_id!r}"
        )


class AttachLocalStateConflictError(OversyncError):
    """Durable local state is incompatible with the requested attach."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"local sync state conflicts with attach: {reason}")


class RemoteReplacePendingError(OversyncError):
    """A remote-authoritative replace for ``target_user_id`` has not finished yet."""

    def __init__(self, target_user_id: str) -> None:
        self.target_user_id = target_user_id
        super().__init__(f"remote replace for user {target_user_id!r} is pending; attach again")


class DirtyStateRejectedError(OversyncError):
    """Pull/rebuild refused: local edits must be pushed first (pull never rebases)."""

    def __init__(self, dirty_count: int) -> None:
        self.dirty_count = dirty_count
        super().__init__(f"cannot pull while {dirty_count} local dirty rows exist")


class PendingPushReplayError(OversyncError):
    """Pull/rebuild refused: a frozen outbox still awaits its authoritative replay."""

    def __init__(self, outbound_count: int) -> None:
        self.outbound_count = outbound_count
        super().__init__(
            f"cannot rebuild while {outbound_count} staged push rows are pending"
            " authoritative replay"
        )


class RebuildRequiredError(OversyncError):
    """A snapshot rebuild must succeed before push/pull can run again."""

    def __init__(self) -> None:
        super().__init__("local sync state requires a rebuild; run Rebuild before syncing")


class SourceRecoveryRequiredError(OversyncError):
    """The server rejected the current source; ``rebuild()`` will rotate it (§4.8)."""

    def __init__(self, code: str, message: str = "") -> None:
        self.code = code
        self.server_message = message
        detail = f": {message}" if message else ""
        super().__init__(f"source recovery required ({code}){detail}; run Rebuild")


class SourceReplacementDivergedError(OversyncError):
    """The locally reserved replacement source differs from the one the server recorded."""

    def __init__(self, local_replacement: str, remote_replacement: str) -> None:
        self.local_replacement = local_replacement
        self.remote_replacement = remote_replacement
        super().__init__(
            f"replacement source diverged: local {local_replacement!r},"
            f" server {remote_replacement!r}"
        )


class UnexpectedStatusError(OversyncError):
    """The server answered a non-2xx status without a decodable ``{"error", ...}`` body.

    Carries the HTTP ``status`` and the raw ``body`` so callers can still classify it (e.g.
    404/405/501 from a server without the connect lifecycle).
    """

    def __init__(self, operation: str, status: int, body: bytes) -> None:
        self.operation = operation
        self.status = status
        self.body = body
        text = body[:200].decode("utf-8", "replace")
        super().__init__(f"{operation}: server returned status {status}: {text}")


class ProtocolViolationError(OversyncError):
    """A 2xx response could not be decoded or broke a rule of the protocol.

    Never retried: it means the server (or something in between) is not speaking the contract.
    """

    def __init__(self, operation: str, message: str) -> None:
        self.operation = operation
        super().__init__(f"{operation}: {message}")


class RetryExhaustedError(OversyncError):
    """Every attempt of a retried operation failed with a retryable error (§9.2)."""

    def __init__(self, operation: str, attempts: int, last_error: BaseException) -> None:
        self.operation = operation
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(f"{operation} failed after {attempts} attempts: {last_error}")


# --- Push, outbox and conflict errors (CLIENT.md §5, §6, §10.3) -------------------------------


class OutboxStateError(OversyncError):
    """The durable outbox or push stage is inconsistent; the push fails closed.

    Raised instead of guessing (rows of several bundles, rows without a bundle, a dirty row for a
    table that is no longer managed, staged rows that do not match the commit). Nothing is
    discarded: the outbox stays as it is so the cause can be inspected.
    """


class InvalidConflictResolutionError(OversyncError):
    """A conflict resolver returned a result that cannot be applied to this conflict (§6.4).

    Before raising, the client restored the whole frozen bundle (conflicting row included) to
    ``_sync_dirty_rows``; local business rows, ``next_source_bundle_id`` and the checkpoint are
    unchanged, so fixing the resolver and pushing again is enough. ``conflict`` is the server's
    conflict object, ``result`` the rejected resolver result.
    """

    def __init__(self, conflict: object, result: object, message: str) -> None:
        self.conflict = conflict
        self.result = result
        self.reason = message
        super().__init__(f"invalid conflict resolution: {message}")


class PushConflictRetryExhaustedError(OversyncError):
    """Conflicts kept coming after the automatic retries (§6.5) of one push.

    The resolved intents are left replayable in ``_sync_dirty_rows``
    (``remaining_dirty_count`` of them); the next push starts a fresh budget.
    """

    def __init__(self, retry_count: int, remaining_dirty_count: int) -> None:
        self.retry_count = retry_count
        self.remaining_dirty_count = remaining_dirty_count
        super().__init__(
            f"push conflicts persisted after {retry_count} automatic retries;"
            f" {remaining_dirty_count} dirty rows remain"
        )


__all__ += [
    "InvalidConflictResolutionError",
    "OutboxStateError",
    "PushConflictRetryExhaustedError",
]


class BundleHashMismatchError(ProtocolViolationError):
    """The committed bundle fetched back does not hash to the server's ``bundle_hash`` (§5.4).

    The push fails closed: the outbox stays ``committed_remote`` and nothing is replayed, so the
    next push fetches the bundle again.
    """

    def __init__(self, bundle_seq: int, expected: str, actual: str) -> None:
        self.bundle_seq = bundle_seq
        self.expected = expected
        self.actual = actual
        super().__init__(
            "committed_bundle_rows",
            f"bundle {bundle_seq}: bundle_hash mismatch (server {expected}, computed {actual})",
        )


__all__ += ["BundleHashMismatchError"]


class ForeignCommittedBundleError(OutboxStateError):
    """``already_committed`` named a bundle that is not our frozen outbox (§5.5 step 4).

    It proves that another writer committed under our ``(source_id, source_bundle_id)``: a
    cloned database file, or an install restored from a backup whose source lives on elsewhere.
    The push recovers on its own by moving the outbox to a fresh source of its own (see
    :mod:`oversync_sa.client.push`); this error escapes only if even that source collides.
    """

    def __init__(self, source_id: str, source_bundle_id: int, detail: str) -> None:
        self.source_id = source_id
        self.source_bundle_id = source_bundle_id
        super().__init__(
            f"already_committed bundle does not match the frozen outbox: {detail}"
            f" (source {source_id}, source bundle {source_bundle_id})"
        )


__all__ += ["ForeignCommittedBundleError"]
