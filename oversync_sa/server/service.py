"""``SyncService``: the one object a host needs to serve the sync protocol.

The protocol steps live in their own modules (``connect``, ``push_sessions``, ``push_commit``,
``committed``, ``pull``, ``snapshot``, ``capabilities``, ``status``, ``writes``, ``watch``); this
facade gives them one typed entry point per wire operation so the HTTP adapter, tests and host
code all call the same thing. Each operation registers itself as in-flight through
:meth:`SyncService.operation` so :meth:`SyncService.close` can drain them (§7.6), and reports
its duration and outcome to ``ServiceConfig.observer`` when one is configured.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import HistoryPrunedError, OversyncError, ServiceUnavailableError
from oversync_sa.server import (
    capabilities as _capabilities,
    committed as _committed,
    connect as _connect,
    pull as _pull,
    push_commit as _push_commit,
    push_sessions as _push_sessions,
    retention as _retention,
    snapshot as _snapshot,
    status as _status,
    watch as _watch,
    writes as _writes,
)
from oversync_sa.server.actor import Actor
from oversync_sa.server.bootstrap import run_bootstrap
from oversync_sa.server.config import ServiceConfig
from oversync_sa.server.finalize import CommittedBundle
from oversync_sa.server.lifecycle import SHUTTING_DOWN_MESSAGE, ServiceClosedError, ServiceState
from oversync_sa.server.observer import Operation, RetentionLag, notify, observe
from oversync_sa.server.retention_lag import DEFAULT_LAG_BUCKETS, measure_retention_lag
from oversync_sa.server.runtime_info import SyncRuntime
from oversync_sa.server.snapshot_encoded import SnapshotChunkWire
from oversync_sa.wire import models as wire

__all__ = ["SHUTTING_DOWN_MESSAGE", "ServiceClosedError", "ServiceState", "SyncService"]

_log = logging.getLogger("oversync_sa.server.service")

_T = TypeVar("_T")


class SyncService:
    """The authoritative sync server over one SQLAlchemy ``AsyncEngine``.

    Construction touches no database (§2.1); call :meth:`bootstrap` before serving. The engine
    is borrowed: :meth:`close` drains operations but does not dispose it.

    Every protocol method takes the calling :class:`~oversync_sa.server.actor.Actor` (the host
    authenticated ``user_id``; ``source_id`` from ``Oversync-Source-ID``) and returns the wire
    Struct of the contract, or raises the contract's :class:`~oversync_sa.errors.WireError`.
    """

    def __init__(self, engine: AsyncEngine, config: ServiceConfig) -> None:
        self.engine = engine
        self.config = config
        self._runtime: SyncRuntime | None = None
        self._state = ServiceState.RUNNING
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def state(self) -> ServiceState:
        return self._state

    @property
    def in_flight(self) -> int:
        """Number of operations currently registered (diagnostics and tests)."""
        return self._in_flight

    @property
    def runtime(self) -> SyncRuntime:
        """Registered-table topology; available after a successful :meth:`bootstrap`."""
        if self._runtime is None:
            raise OversyncError("SyncService.bootstrap() has not completed")
        return self._runtime

    @property
    def is_bootstrapped(self) -> bool:
        return self._runtime is not None

    async def bootstrap(self) -> SyncRuntime:
        """Validate the registered tables, create/verify ``sync.*`` and install triggers.

        Idempotent; safe to run concurrently from several processes. A server that serves
        ``/sync/watch`` then calls :meth:`start_watch` (the Litestar plugin does both).
        """
        self._runtime = await run_bootstrap(self.engine, self.config)
        return self._runtime

    async def start_watch(self) -> None:
        """Start this process's bundle-change ``LISTEN`` task (§7.4); idempotent.

        Separate from :meth:`bootstrap` because the listener holds a dedicated connection for
        the life of the service: maintenance scripts and tests that only bootstrap should not
        pay for it. :meth:`close` stops it.
        """
        await _watch.bundle_change_watch(self).start()

    @asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        """Register one in-flight operation; rejects new work once shutdown began."""
        if self._state is ServiceState.SHUTTING_DOWN:
            raise ServiceUnavailableError(SHUTTING_DOWN_MESSAGE)
        if self._state is ServiceState.CLOSED:
            raise ServiceClosedError("sync service is closed")
        self._in_flight += 1
        self._drained.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.set()

    async def close(self) -> None:
        """Stop accepting operations, end watch streams, wait for in-flight work; idempotent.

        Watch streams are closed first: they are not in-flight operations, and holding them
        open through the drain would only delay the host's shutdown. Bound the wait with
        ``asyncio.timeout``; if it expires the service stays ``shutting_down`` (new work keeps
        getting 503) and the caller may close again.
        """
        if self._state is ServiceState.CLOSED:
            return
        self._state = ServiceState.SHUTTING_DOWN
        await _watch.bundle_change_watch(self).close()
        await self._drained.wait()
        self._state = ServiceState.CLOSED
        _log.info("sync service closed")

    async def _with_pruned_log(
        self, actor: Actor, operation: Operation, call: Awaitable[_T]
    ) -> _T:
        """:func:`observe`, plus an INFO record when the answer is ``history_pruned``.

        The operations that can prune are the ones whose clients must then rebuild, which is
        worth a log line with who and where, whatever the observer.
        """
        try:
            return await observe(self.config.observer, operation, call)
        except HistoryPrunedError as exc:
            _log.info(
                "history_pruned on %s for user %s source %s: %s",
                operation, actor.user_id, actor.source_id, exc.message,
                extra={"user": actor.user_id, "source_id": actor.source_id,
                       "operation": operation},
            )
            raise

    # -- connect and push (§4, §5) ------------------------------------------------------------

    async def connect(
        self, actor: Actor, request: wire.ConnectRequest | None = None
    ) -> wire.ConnectResponse:
        """``POST /sync/connect``: decide who establishes the scope's authority (§4)."""
        return await observe(
            self.config.observer,
            "connect",
            _connect.connect(self, actor.user_id, actor.source_id, request),
        )

    async def create_push_session(
        self, actor: Actor, request: wire.PushSessionCreateRequest
    ) -> wire.PushSessionCreateResponse:
        """``POST /sync/push-sessions`` (§5.1); answers ``already_committed`` on replays."""
        return await self._with_pruned_log(
            actor,
            "push_create",
            _push_sessions.create_push_session(self, actor.user_id, actor.source_id, request),
        )

    async def upload_push_chunk(
        self, actor: Actor, push_id: str, request: wire.PushSessionChunkRequest
    ) -> wire.PushSessionChunkResponse:
        """``POST /sync/push-sessions/{push_id}/chunks`` (§5.2)."""
        return await observe(
            self.config.observer,
            "push_chunk",
            _push_sessions.upload_push_chunk(
                self, actor.user_id, actor.source_id, push_id, request
            ),
        )

    async def commit_push_session(
        self, actor: Actor, push_id: str
    ) -> wire.PushSessionCommitResponse:
        """``POST /sync/push-sessions/{push_id}/commit``: apply the staged rows as one bundle."""
        observer = self.config.observer
        started = time.perf_counter()
        response = await observe(
            observer,
            "push_commit",
            _push_commit.commit_push_session(self, actor.user_id, actor.source_id, push_id),
        )
        if observer is not None:
            duration = time.perf_counter() - started
            notify(observer.push_committed, actor.user_id, response.row_count, 1, duration)
        return response

    async def delete_push_session(self, actor: Actor, push_id: str) -> None:
        """``DELETE /sync/push-sessions/{push_id}`` (§5.5)."""
        await observe(
            self.config.observer,
            "push_delete",
            _push_sessions.delete_push_session(self, actor.user_id, actor.source_id, push_id),
        )

    # -- reading (§6) --------------------------------------------------------------------------

    async def committed_bundle_rows(
        self,
        actor: Actor,
        bundle_seq: int,
        *,
        after_row_ordinal: int | None = None,
        max_rows: int | None = None,
    ) -> wire.CommittedBundleRowsResponse:
        """``GET /sync/committed-bundles/{bundle_seq}/rows`` (§6.1)."""
        return await self._with_pruned_log(
            actor,
            "committed_rows",
            _committed.fetch_committed_bundle_rows(
                self, actor, bundle_seq, after_row_ordinal=after_row_ordinal, max_rows=max_rows
            ),
        )

    async def pull(
        self,
        actor: Actor,
        *,
        after_bundle_seq: int = 0,
        max_bundles: int = _pull.DEFAULT_MAX_BUNDLES,
        target_bundle_seq: int = 0,
    ) -> wire.PullResponse:
        """``GET /sync/pull``: complete bundles after the checkpoint, to a frozen ceiling."""
        return await self._with_pruned_log(
            actor,
            "pull",
            _pull.pull(
                self,
                actor,
                after_bundle_seq=after_bundle_seq,
                max_bundles=max_bundles,
                target_bundle_seq=target_bundle_seq,
            ),
        )

    async def pull_encoded(
        self,
        actor: Actor,
        *,
        after_bundle_seq: int = 0,
        max_bundles: int = _pull.DEFAULT_MAX_BUNDLES,
        target_bundle_seq: int = 0,
    ) -> _pull.EncodedPullPage:
        """:meth:`pull` rendered to wire JSON in SQL (same bytes; what the HTTP route sends)."""
        return await self._with_pruned_log(
            actor,
            "pull",
            _pull.pull_encoded(
                self,
                actor,
                after_bundle_seq=after_bundle_seq,
                max_bundles=max_bundles,
                target_bundle_seq=target_bundle_seq,
            ),
        )

    async def create_snapshot_session(
        self, actor: Actor, request: wire.SnapshotSessionCreateRequest | None = None
    ) -> wire.SnapshotSession:
        """``POST /sync/snapshot-sessions``: freeze the scope's rows (§6.3)."""
        return await observe(
            self.config.observer,
            "snapshot_create",
            _snapshot.create_snapshot_session(self, actor, request),
        )

    async def snapshot_chunk(
        self,
        actor: Actor,
        snapshot_id: str,
        *,
        after_row_ordinal: int | None = None,
        max_rows: int | None = None,
    ) -> wire.SnapshotChunkResponse:
        """``GET /sync/snapshot-sessions/{snapshot_id}`` (§6.3)."""
        return await observe(
            self.config.observer,
            "snapshot_chunk",
            _snapshot.get_snapshot_chunk(
                self, actor, snapshot_id, after_row_ordinal=after_row_ordinal, max_rows=max_rows
            ),
        )

    async def snapshot_chunk_encoded(
        self,
        actor: Actor,
        snapshot_id: str,
        *,
        after_row_ordinal: int | None = None,
        max_rows: int | None = None,
    ) -> SnapshotChunkWire:
        """:meth:`snapshot_chunk` rendered to wire JSON in SQL (same bytes; the HTTP route's)."""
        return await observe(
            self.config.observer,
            "snapshot_chunk",
            _snapshot.get_snapshot_chunk_encoded(
                self, actor, snapshot_id, after_row_ordinal=after_row_ordinal, max_rows=max_rows
            ),
        )

    async def delete_snapshot_session(self, actor: Actor, snapshot_id: str) -> None:
        """``DELETE /sync/snapshot-sessions/{snapshot_id}`` (§6.3)."""
        await observe(
            self.config.observer,
            "snapshot_delete",
            _snapshot.delete_snapshot_session(self, actor, snapshot_id),
        )

    async def capabilities(
        self,
        actor: Actor | None = None,
        *,
        watch_policy: _capabilities.WatchPolicy | None = None,
    ) -> wire.CapabilitiesResponse:
        """``GET /sync/capabilities``; ``watch_policy`` may hide the watch flag per actor."""
        return await _capabilities.capabilities(self.config, actor, watch_policy=watch_policy)

    async def status(self) -> wire.StatusResponse:
        """``GET /syncx/status``: lifecycle, counters and retention aggregates (§6.5)."""
        return await _status.status(self)

    async def health(self) -> tuple[wire.StatusResponse, int]:
        """``GET /syncx/health``: the status payload and the HTTP status (200 or 503)."""
        return await _status.health(self)

    async def watch(
        self, actor: Actor, after_bundle_seq: int = 0
    ) -> _watch.BundleChangeSubscription:
        """Subscribe to bundle-change wake-ups of the actor's scope (§7.4, ``/sync/watch``)."""
        return await observe(
            self.config.observer,
            "watch_subscribe",
            _watch.bundle_change_watch(self).subscribe(actor.user_id, after_bundle_seq),
        )

    async def measure_retention_lag(
        self, *, bounds: tuple[int, ...] = DEFAULT_LAG_BUCKETS
    ) -> RetentionLag:
        """Aggregate every user's retained-floor lag and hand it to the observer (if any).

        One query over ``sync.user_state`` whose result has a fixed size whatever the number of
        users; call it from a periodic task or a metrics scrape, not per request.
        """
        lag = await measure_retention_lag(
            self.engine, window=self.config.retained_bundles_per_user, bounds=bounds
        )
        if self.config.observer is not None:
            notify(self.config.observer.retention_lag_measured, lag)
        return lag

    # -- server-originated writes and maintenance (§7.1, §7.3) --------------------------------

    def scope_manager(self, *, model_schema: str | None = None) -> _writes.ScopeManager:
        """A :class:`~oversync_sa.server.writes.ScopeManager` for server-originated writes."""
        return _writes.ScopeManager(self, model_schema=model_schema)

    async def within_sync_bundle(
        self,
        user_id: str,
        source: _writes.BundleSource,
        callback: _writes.BundleCallback,
        *,
        model_schema: str | None = None,
    ) -> CommittedBundle | None:
        """Run ``callback`` as exactly one bundle of ``source`` (§7.3 ``WithinSyncBundle``)."""
        return await _writes.within_sync_bundle(
            self, user_id, source, callback, model_schema=model_schema
        )

    async def prune(
        self,
        *,
        users_per_transaction: int = 100,
        max_transactions: int | None = None,
        progress: Callable[[_retention.PruneProgress], None] | None = None,
    ) -> _retention.PruneProgress:
        """Bring every user's retained history down to the configured window (§7.1).

        Commits already prune a bounded batch each; run this periodically (cron, the CLI's
        ``oversync-sa prune``) to catch up idle users.
        """
        return await _retention.prune(
            self.engine,
            self.config,
            users_per_transaction=users_per_transaction,
            max_transactions=max_transactions,
            progress=progress,
        )
