"""The observer seam: how a host learns what the sync service does, without a metrics framework.

:class:`SyncObserver` is a base class whose methods all do nothing; a host overrides the events
it cares about and passes the instance as ``ServiceConfig(observer=...)``. The Prometheus
adapter (:class:`oversync_sa.metrics.prometheus.PrometheusObserver`) is one such observer; a
log shipper or a StatsD bridge would be another.

Events are reported synchronously on the request path, after the operation finished, so they
must be cheap and must not block. An exception from an observer is logged and swallowed by
:func:`notify`: observability must never fail a sync request. With no observer configured the
service checks one attribute per operation and calls nothing.

Every label-like argument is drawn from a bounded set (operation names, wire error codes,
registered table names), never from user ids, so an adapter can turn them into metric labels
without cardinality surprises. ``push_committed`` passes the user for logging-style observers;
metric adapters must not use it as a label.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeVar, get_args

from oversync_sa.errors import HistoryPrunedError, PushConflictError, WireError

__all__ = [
    "OPERATIONS",
    "OUTCOME_ERROR",
    "OUTCOME_OK",
    "Operation",
    "RetentionLag",
    "SyncObserver",
    "notify",
    "observe",
]

_log: Final = logging.getLogger("oversync_sa.server.observer")

_T = TypeVar("_T")

#: The wire operations :class:`~oversync_sa.server.SyncService` reports, one per facade method.
Operation = Literal[
    "connect",
    "push_create",
    "push_chunk",
    "push_commit",
    "push_delete",
    "committed_rows",
    "pull",
    "snapshot_create",
    "snapshot_chunk",
    "snapshot_delete",
    "watch_subscribe",
]
OPERATIONS: Final[tuple[Operation, ...]] = get_args(Operation)

#: ``outcome`` of a successful operation; a failed one reports its wire error ``code``
#: (``"push_conflict"``, ``"history_pruned"`` ...) or :data:`OUTCOME_ERROR` for anything else.
OUTCOME_OK: Final = "ok"
OUTCOME_ERROR: Final = "error"


@dataclass(frozen=True, slots=True)
class RetentionLag:
    """How far each user's retained floor trails its head, aggregated over all users.

    A user's lag is ``head - retained_bundle_floor``: the bundles still kept in
    ``sync.bundle_log`` for that user. ``bucket_bounds`` are upper bounds (inclusive) and
    ``bucket_counts[i]`` is the number of users whose lag is at most ``bucket_bounds[i]``
    (cumulative, like a Prometheus histogram); users above the last bound only count in
    ``users``. ``over_window`` counts users whose lag exceeds ``retained_bundles_per_user``,
    i.e. the backlog a prune run (:meth:`SyncService.prune`) would shrink.
    """

    users: int
    total_lag: int
    max_lag: int
    over_window: int
    bucket_bounds: tuple[int, ...]
    bucket_counts: tuple[int, ...]


class SyncObserver:
    """Receives the service's events; every method is a no-op unless overridden.

    ``duration`` arguments are seconds measured with :func:`time.perf_counter`.
    """

    def operation_finished(self, operation: Operation, duration: float, outcome: str) -> None:
        """A facade operation returned (``outcome="ok"``) or raised (its wire error code)."""

    def push_committed(self, user_id: str, rows: int, bundles: int, duration: float) -> None:
        """A push session was committed as ``bundles`` new bundle(s) holding ``rows`` rows."""

    def push_conflict(self, table: str) -> None:
        """A push commit was rejected with ``push_conflict`` on ``table`` (``schema.table``)."""

    def history_pruned(self, operation: Operation) -> None:
        """``operation`` answered ``history_pruned``: a client must rebuild from a snapshot."""

    def watch_subscribers_changed(self, count: int) -> None:
        """The number of open watch subscriptions in this process is now ``count``."""

    def retention_lag_measured(self, lag: RetentionLag) -> None:
        """:meth:`SyncService.measure_retention_lag` computed a fresh :class:`RetentionLag`."""


def notify(callback: Callable[..., None], *args: object) -> None:
    """Call one observer method; log and swallow what it raises (metrics never fail a request)."""
    try:
        callback(*args)
    except Exception:
        _log.exception("sync observer %s raised", getattr(callback, "__qualname__", callback))


def _conflict_table(error: PushConflictError) -> str | None:
    conflict = error.conflict or {}
    schema, table = conflict.get("schema"), conflict.get("table")
    if isinstance(schema, str) and isinstance(table, str):
        return f"{schema}.{table}"
    return None


def _report_failure(
    observer: SyncObserver, operation: Operation, duration: float, error: Exception
) -> None:
    outcome = error.code if isinstance(error, WireError) and error.code else OUTCOME_ERROR
    notify(observer.operation_finished, operation, duration, outcome)
    if isinstance(error, PushConflictError):
        table = _conflict_table(error)
        if table is not None:
            notify(observer.push_conflict, table)
    elif isinstance(error, HistoryPrunedError):
        notify(observer.history_pruned, operation)


async def observe(
    observer: SyncObserver | None, operation: Operation, call: Awaitable[_T]
) -> _T:
    """Await ``call`` and report its duration and outcome to ``observer`` (if any).

    Failures are reported with their wire code, plus ``push_conflict`` / ``history_pruned``
    events for those errors, and re-raised unchanged. Cancellation is not reported: the
    operation did not finish.
    """
    if observer is None:
        return await call
    started = time.perf_counter()
    try:
        result = await call
    except Exception as exc:
        _report_failure(observer, operation, time.perf_counter() - started, exc)
        raise
    notify(observer.operation_finished, operation, time.perf_counter() - started, OUTCOME_OK)
    return result
