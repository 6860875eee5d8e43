"""The one error tree of oversync-sa.

Every exception the library raises on purpose derives from :class:`OversyncError`.

* :class:`WireError` subclasses stand for the error codes of the HTTP contract
  (``two_way_sync.yaml``, SERVER.md §9). Each class carries its wire ``code`` and HTTP
  ``status`` as class attributes, so the server maps an exception to a response with one
  table lookup and the client maps a response back to the same class with
  :func:`wire_error_for`.
* :class:`UnsupportedSchemaError` is raised by bootstrap and by the metadata projection when a
  table cannot be synced; it lists every violation, not only the first.
* :class:`ConfigurationError` is raised for invalid library configuration.

The tree (``code`` / status):

.. code-block:: text

    OversyncError
    ├── ConfigurationError
    ├── UnsupportedSchemaError
    ├── ScopeWriteNoCapturedChangesError
    └── WireError
        ├── AuthenticationFailedError        authentication_failed          401
        ├── InvalidRequestError              invalid_request                400
        ├── MethodNotAllowedError            method_not_allowed             405
        ├── ServiceUnavailableError          service_unavailable            503
        ├── ConnectInvalidError              connect_invalid                400
        ├── ConnectFailedError               connect_failed                 500
        ├── PushSessionInvalidError          push_session_invalid           400
        ├── ScopeUninitializedError          scope_uninitialized            409
        ├── ScopeInitializingError           scope_initializing             409
        ├── InitializationStaleError         initialization_stale           409
        ├── InitializationExpiredError       initialization_expired         410
        ├── HistoryPrunedError               history_pruned                 409
        ├── SourceSequenceOutOfOrderError    source_sequence_out_of_order   409
        ├── SourceRetiredError               source_retired                 409
        ├── PushSessionCreateFailedError     push_session_create_failed     500
        ├── PushChunkInvalidError            push_chunk_invalid             400
        ├── PushChunkOutOfOrderError         push_chunk_out_of_order        409
        ├── PushSessionNotFoundError         push_session_not_found         404
        ├── PushSessionExpiredError          push_session_expired           410
        ├── PushSessionForbiddenError        push_session_forbidden         403
        ├── PushChunkFailedError             push_chunk_failed              500
        ├── PushCommitInvalidError           push_commit_invalid            400
        ├── PushConflictError                push_conflict                  409
        ├── SourceSequenceChangedError       source_sequence_changed        409
        ├── PushSessionCommitFailedError     push_session_commit_failed     500
        ├── PushSessionDeleteFailedError     push_session_delete_failed     500
        ├── CommittedBundleChunkInvalidError committed_bundle_chunk_invalid 400
        ├── CommittedBundleNotFoundError     committed_bundle_not_found     404
        ├── CommittedBundleRowsFailedError   committed_bundle_rows_failed   500
        ├── PullFailedError                  pull_failed                    500
        ├── BundleChangeWatchForbiddenError  bundle_change_watch_forbidden  403
        ├── BundleChangeWatchDisabledError   bundle_change_watch_disabled   503
        ├── BundleChangeWatchFailedError     bundle_change_watch_failed     500
        ├── SnapshotSessionInvalidError      snapshot_session_invalid       400
        ├── SourceReplacementInvalidError    source_replacement_invalid     409
        ├── SnapshotSessionCreateFailedError snapshot_session_create_failed 500
        ├── SnapshotChunkInvalidError        snapshot_chunk_invalid         400
        ├── SnapshotSessionNotFoundError     snapshot_session_not_found     404
        ├── SnapshotSessionExpiredError      snapshot_session_expired       410
        ├── SnapshotSessionForbiddenError    snapshot_session_forbidden     403
        ├── SnapshotChunkFailedError         snapshot_chunk_failed          500
        ├── SnapshotSessionDeleteFailedError snapshot_session_delete_failed 500
        ├── StatusFailedError                status_failed                  500
        └── HealthFailedError                health_failed                  500
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "AuthenticationFailedError",
    "BundleChangeWatchDisabledError",
    "BundleChangeWatchFailedError",
    "BundleChangeWatchForbiddenError",
    "CommittedBundleChunkInvalidError",
    "CommittedBundleNotFoundError",
    "CommittedBundleRowsFailedError",
    "ConfigurationError",
    "ConnectFailedError",
    "ConnectInvalidError",
    "HealthFailedError",
    "HistoryPrunedError",
    "InitializationExpiredError",
    "InitializationStaleError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "OversyncError",
    "PullFailedError",
    "PushChunkFailedError",
    "PushChunkInvalidError",
    "PushChunkOutOfOrderError",
    "PushCommitInvalidError",
    "PushConflictError",
    "PushSessionCommitFailedError",
    "PushSessionCreateFailedError",
    "PushSessionDeleteFailedError",
    "PushSessionExpiredError",
    "PushSessionForbiddenError",
    "PushSessionInvalidError",
    "PushSessionNotFoundError",
    "SchemaViolation",
    "ScopeInitializingError",
    "ScopeUninitializedError",
    "ScopeWriteNoCapturedChangesError",
    "ServiceUnavailableError",
    "SnapshotChunkFailedError",
    "SnapshotChunkInvalidError",
    "SnapshotSessionCreateFailedError",
    "SnapshotSessionDeleteFailedError",
    "SnapshotSessionExpiredError",
    "SnapshotSessionForbiddenError",
    "SnapshotSessionInvalidError",
    "SnapshotSessionNotFoundError",
    "SourceReplacementInvalidError",
    "SourceRetiredError",
    "SourceSequenceChangedError",
    "SourceSequenceOutOfOrderError",
    "StatusFailedError",
    "UnsupportedSchemaError",
    "WIRE_ERRORS",
    "WireError",
    "wire_error_for",
]


class OversyncError(Exception):
    """Root of every error oversync-sa raises on purpose."""


class ConfigurationError(OversyncError, ValueError):
    """The library was configured with values it cannot work with; the message says which."""


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """One reason a table cannot be synced.

    ``table`` is ``"schema.table"`` (or the model name when raised at declaration time),
    ``rule`` a stable short identifier such as ``"scope_column"`` or ``"fk_deferrable"``,
    ``constraint`` the offending constraint or index when there is one.
    """

    table: str
    rule: str
    message: str
    constraint: str | None = None

    def __str__(self) -> str:
        where = f"{self.table} ({self.constraint})" if self.constraint else self.table
        return f"{where}: [{self.rule}] {self.message}"


class UnsupportedSchemaError(OversyncError):
    """The database or the declared models have shapes sync cannot support.

    Bootstrap fails closed: it collects *every* violation before raising, so one run tells the
    user all that must change. ``violations`` keeps them in a stable order.
    """

    def __init__(self, violations: Iterable[SchemaViolation] | str) -> None:
        if isinstance(violations, str):
            self.violations: tuple[SchemaViolation, ...] = (
                SchemaViolation(table="", rule="schema", message=violations),
            )
        else:
            self.violations = tuple(violations)
        lines = "\n".join(f"  - {v}" for v in self.violations)
        super().__init__(f"unsupported schema: {len(self.violations)} violation(s):\n{lines}")


class ScopeWriteNoCapturedChangesError(OversyncError):
    """A ScopeManager write touched no registered table, so there was no bundle to commit."""


class WireError(OversyncError):
    """An error of the HTTP contract: it carries the wire ``code`` and HTTP ``status``.

    ``extras`` holds structured members that are sent beside ``error`` and ``message``
    (e.g. ``source_id`` of ``source_retired``).
    """

    code: ClassVar[str] = ""
    status: ClassVar[int] = 500

    def __init__(self, message: str = "", **extras: Any) -> None:
        self.message = message or self.code.replace("_", " ")
        self.extras: dict[str, Any] = extras
        super().__init__(self.message)

    def to_body(self) -> dict[str, Any]:
        """The JSON error body of the contract: ``{"error", "message", ...extras}``."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        body.update(self.extras)
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class AuthenticationFailedError(WireError):
    """No trusted user id, or the actor lacks a user or source."""

    code = "authentication_failed"
    status = 401


class InvalidRequestError(WireError):
    """The request cannot be decoded or a query parameter is malformed."""

    code = "invalid_request"
    status = 400


class MethodNotAllowedError(WireError):
    """The HTTP method is not the one the route serves."""

    code = "method_not_allowed"
    status = 405


class ServiceUnavailableError(WireError):
    """The service is shutting down (or not yet started)."""

    code = "service_unavailable"
    status = 503


class ConnectInvalidError(WireError):
    code = "connect_invalid"
    status = 400


class ConnectFailedError(WireError):
    code = "connect_failed"
    status = 500


class PushSessionInvalidError(WireError):
    """Push create was given bad numbers or an initialization id that does not fit the scope."""

    code = "push_session_invalid"
    status = 400


class ScopeUninitializedError(WireError):
    """The scope has no authoritative state yet; the client must connect first."""

    code = "scope_uninitialized"
    status = 409


class ScopeInitializingError(WireError):
    """Another source holds the initialization lease of the scope."""

    code = "scope_initializing"
    status = 409


class InitializationStaleError(WireError):
    code = "initialization_stale"
    status = 409


class InitializationExpiredError(WireError):
    code = "initialization_expired"
    status = 410


class HistoryPrunedError(WireError):
    """The requested history is at or below the retained floor; rebuild from a snapshot."""

    code = "history_pruned"
    status = 409


class SourceSequenceOutOfOrderError(WireError):
    code = "source_sequence_out_of_order"
    status = 409


class SourceRetiredError(WireError):
    """The source was retired (replaced); the body names the replacement when known."""

    code = "source_retired"
    status = 409

    def __init__(
        self, message: str = "", *, source_id: str, replaced_by_source_id: str = ""
    ) -> None:
        extras: dict[str, Any] = {"source_id": source_id}
        if replaced_by_source_id:
            extras["replaced_by_source_id"] = replaced_by_source_id
        super().__init__(message, **extras)
        self.source_id = source_id
        self.replaced_by_source_id = replaced_by_source_id


class PushSessionCreateFailedError(WireError):
    code = "push_session_create_failed"
    status = 500


class PushChunkInvalidError(WireError):
    code = "push_chunk_invalid"
    status = 400


class PushChunkOutOfOrderError(WireError):
    code = "push_chunk_out_of_order"
    status = 409


class PushSessionNotFoundError(WireError):
    code = "push_session_not_found"
    status = 404


class PushSessionExpiredError(WireError):
    code = "push_session_expired"
    status = 410


class PushSessionForbiddenError(WireError):
    code = "push_session_forbidden"
    status = 403


class PushChunkFailedError(WireError):
    code = "push_chunk_failed"
    status = 500


class PushCommitInvalidError(WireError):
    code = "push_commit_invalid"
    status = 400


class PushConflictError(WireError):
    """Optimistic-concurrency conflict; ``conflict`` is the structured body (SERVER.md §5.4).

    ``conflict`` is the plain JSON object of the contract's ``PushConflictDetails`` so the
    error module stays free of wire-model imports.
    """

    code = "push_conflict"
    status = 409

    def __init__(self, message: str = "", *, conflict: Mapping[str, Any] | None = None) -> None:
        if conflict is None:
            super().__init__(message)
        else:
            super().__init__(message, conflict=dict(conflict))
        self.conflict: dict[str, Any] | None = None if conflict is None else dict(conflict)


class SourceSequenceChangedError(WireError):
    code = "source_sequence_changed"
    status = 409


class PushSessionCommitFailedError(WireError):
    code = "push_session_commit_failed"
    status = 500


class PushSessionDeleteFailedError(WireError):
    code = "push_session_delete_failed"
    status = 500


class CommittedBundleChunkInvalidError(WireError):
    code = "committed_bundle_chunk_invalid"
    status = 400


class CommittedBundleNotFoundError(WireError):
    code = "committed_bundle_not_found"
    status = 404


class CommittedBundleRowsFailedError(WireError):
    code = "committed_bundle_rows_failed"
    status = 500


class PullFailedError(WireError):
    code = "pull_failed"
    status = 500


class BundleChangeWatchForbiddenError(WireError):
    code = "bundle_change_watch_forbidden"
    status = 403


class BundleChangeWatchDisabledError(WireError):
    code = "bundle_change_watch_disabled"
    status = 503


class BundleChangeWatchFailedError(WireError):
    code = "bundle_change_watch_failed"
    status = 500


class SnapshotSessionInvalidError(WireError):
    code = "snapshot_session_invalid"
    status = 400


class SourceReplacementInvalidError(WireError):
    code = "source_replacement_invalid"
    status = 409


class SnapshotSessionCreateFailedError(WireError):
    code = "snapshot_session_create_failed"
    status = 500


class SnapshotChunkInvalidError(WireError):
    code = "snapshot_chunk_invalid"
    status = 400


class SnapshotSessionNotFoundError(WireError):
    code = "snapshot_session_not_found"
    status = 404


class SnapshotSessionExpiredError(WireError):
    code = "snapshot_session_expired"
    status = 410


class SnapshotSessionForbiddenError(WireError):
    code = "snapshot_session_forbidden"
    status = 403


class SnapshotChunkFailedError(WireError):
    code = "snapshot_chunk_failed"
    status = 500


class SnapshotSessionDeleteFailedError(WireError):
    code = "snapshot_session_delete_failed"
    status = 500


class StatusFailedError(WireError):
    code = "status_failed"
    status = 500


class HealthFailedError(WireError):
    code = "health_failed"
    status = 500


def _collect() -> dict[str, type[WireError]]:
    found: dict[str, type[WireError]] = {}
    pending: list[type[WireError]] = list(WireError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.code and cls.__module__ == __name__:
            found[cls.code] = cls
    return dict(sorted(found.items()))


#: Every contract error code mapped to its class.
WIRE_ERRORS: Mapping[str, type[WireError]] = _collect()


def wire_error_for(code: str, message: str = "", **extras: Any) -> WireError:
    """Build the exception for a wire ``code`` received from a server.

    Unknown codes (for example a host application's own) become a plain :class:`WireError`
    whose instance ``code`` is the received one, so nothing is lost.
    """
    cls = WIRE_ERRORS.get(code)
    if cls is None:
        err = WireError(message, **extras)
        err.code = code  # type: ignore[misc]
        return err
    if cls is SourceRetiredError:
        return SourceRetiredError(
            message,
            source_id=str(extras.get("source_id", "")),
            replaced_by_source_id=str(extras.get("replaced_by_source_id", "")),
        )
    if cls is PushConflictError:
        conflict = extras.get("conflict")
        return PushConflictError(
            message, conflict=conflict if isinstance(conflict, Mapping) else None
        )
    return cls(message, **extras)
