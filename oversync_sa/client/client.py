"""The user-facing client: :class:`SyncClient` (async) and :class:`BlockingSyncClient`.

Every public operation takes the client's operation lock without waiting (§4.1), so two
concurrent calls never interleave; the loser gets
:class:`~oversync_sa.client.errors.SyncOperationInProgressError`. ``close()`` is the exception:
it waits for a running operation.

SQLAlchemy integration: ``SyncClient.create(path, url, token, models=Base)`` creates or upgrades
the SQLite mirror of the synced models (:mod:`oversync_sa.client.schema_upgrade`) and derives the
configuration from them; :meth:`SyncClient.session` hands out a :class:`SyncSession` bound to the
client's SQLite engine whose ``await session.sync()`` commits and runs a full sync.

Background sync (§9.3/9.4): :meth:`SyncClient.start` / :meth:`SyncClient.stop`, observed through
:attr:`SyncClient.background_status` and the ``on_error``/``on_sync`` callbacks
(:mod:`oversync_sa.client.background`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from oversync_sa.client import lifecycle, pull, snapshot
from oversync_sa.client.background import (
    BackgroundStatus,
    BackgroundSync,
    DownloadMode,
    ErrorCallback,
    LoopPhase,
    LoopStatus,
    SyncCallback,
)
from oversync_sa.client.config import ClientConfig
from oversync_sa.client.conflicts import ConflictResolver, ServerWinsResolver
from oversync_sa.client.errors import ClientClosedError, ConfigFieldError
from oversync_sa.client.local_schema import initialize_database
from oversync_sa.client.progress import ProgressCallback
from oversync_sa.client.push import push_pending
from oversync_sa.client.results import (
    AttachResult,
    DetachOutcome,
    DetachResult,
    PendingSyncStatus,
    PushOutcome,
    PushReport,
    PushTransferStats,
    RemoteSyncOutcome,
    RemoteSyncReport,
    SourceInfo,
    SyncReport,
    SyncStatus,
    SyncThenDetachResult,
)
from oversync_sa.client.runtime import OWNERSHIP, ClientRuntime, database_identity, prepare_engine
from oversync_sa.client.schema_upgrade import (
    SchemaUpgradeReport,
    reconcile_table_set,
    upgrade_schema_in,
)
from oversync_sa.client.state import (
    count_dirty_rows,
    count_outbox_rows,
    ensure_connected,
    read_sync_status,
)
from oversync_sa.client.transport import SyncTransport, TokenProvider
from oversync_sa.client.triggers import install_managed_triggers
from oversync_sa.client.validation import validate_managed_tables

__all__ = ["BlockingSyncClient", "SyncClient", "SyncSession"]

_T = TypeVar("_T")
_MAX_DETACH_ROUNDS = 3


class SyncSession(AsyncSession):
    """An ``AsyncSession`` on the client's database whose :meth:`sync` runs a full sync."""

    sync_client: SyncClient

    async def sync(self) -> SyncReport:
        """Commit pending ORM changes (so the triggers capture them), then ``client.sync()``."""
        await self.commit()
        return await self.sync_client.sync()


class SyncClient:
    """Async oversync client over one SQLite database (Go ``Client``).

    Build it with :meth:`create`; then ``open()``, ``attach(user_id)``, and ``sync()`` (or
    ``start()`` for background sync).

    ``schema_upgrade`` is the report of the model upgrade :meth:`create` ran (``None`` when it
    was built from a plain configuration).
    """

    def __init__(
        self, runtime: ClientRuntime, schema_upgrade: SchemaUpgradeReport | None = None
    ) -> None:
        self.runtime = runtime
        self.schema_upgrade = schema_upgrade
        if runtime.resolver is None:
            runtime.resolver = ServerWinsResolver()
        self._background: BackgroundSync | None = None

    @classmethod
    async def create(
        cls,
        database: str | Path | AsyncEngine,
        base_url: str,
        token_provider: TokenProvider,
        config: ClientConfig | None = None,
        *,
        models: Any = None,
        schema: str = "business",
        transport: SyncTransport | None = None,
        http_transport: Any = None,
    ) -> SyncClient:
        """Construct and validate (§1.2): ownership, metadata tables, schema, triggers.

        ``database`` is a file path or an ``AsyncEngine`` on SQLite (its connection events are
        configured, see :func:`~oversync_sa.client.runtime.prepare_engine`).
        ``http_transport`` (an ``httpx.AsyncBaseTransport``) plugs a fake server in.

        With ``models`` (a :class:`~oversync_sa.metadata.SyncedBase` subclass) the SQLite
        mirror ``client_projection(models)`` is created or upgraded in place first - new tables,
        new nullable columns, refreshed triggers, pending dirty rows kept (see
        :mod:`oversync_sa.client.schema_upgrade`) - and ``config`` defaults to
        ``ClientConfig.from_models(models, schema)``. Without ``models`` the tables must exist
        and ``config`` is required. Everything up to the triggers is one transaction.
        """
        if config is None:
            if models is None:
                raise ConfigFieldError("config", "pass a ClientConfig or models=")
            config = ClientConfig.from_models(models, schema)
        engine = (
            database
            if isinstance(database, AsyncEngine)
            else create_async_engine(f"sqlite+aiosqlite:///{database}")
        )
        prepare_engine(engine)
        async with engine.connect() as conn:
            key = await database_identity(conn)
        OWNERSHIP.claim(key)
        report: SchemaUpgradeReport | None = None
        try:
            async with engine.connect() as conn:
                await initialize_database(conn, default_cache_kib=config.default_cache_kib)
            async with engine.begin() as conn:
                if models is not None:
                    managed, report = await upgrade_schema_in(conn, models, config)
                else:
                    managed = await validate_managed_tables(conn, config)
                    await reconcile_table_set(conn, managed)
                    await install_managed_triggers(conn, managed)
        except BaseException:
            OWNERSHIP.release(key)
            raise
        holder: list[ClientRuntime] = []
        sync_transport = transport or SyncTransport(
            base_url,
            token_provider,
            source_id=lambda: holder[0].source_id if holder else "",
            retry_policy=config.effective_retry_policy,
            transport=http_transport,
        )
        runtime = ClientRuntime(
            engine=engine, config=config, managed=managed, transport=sync_transport,
            ownership_key=key,
        )
        holder.append(runtime)
        return cls(runtime, report)

    # -- conflict resolution and diagnostics -----------------------------------------------

    @property
    def resolver(self) -> ConflictResolver:
        """Decides push conflicts (§6.2); :class:`ServerWinsResolver` unless you set one.

        Assigning ``None`` restores the default.
        """
        resolver = self.runtime.resolver
        assert resolver is not None  # set in __init__, never cleared
        return resolver

    @resolver.setter
    def resolver(self, resolver: ConflictResolver | None) -> None:
        self.runtime.resolver = resolver if resolver is not None else ServerWinsResolver()

    @property
    def push_stats(self) -> PushTransferStats:
        """Cumulative push diagnostics (§10.2); call ``reset()`` on it to start over."""
        return self.runtime.push_stats

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        async with self.runtime.operation("Open()"):
            await lifecycle.open_client(self.runtime)

    async def attach(self, user_id: str) -> AttachResult:
        async with self.runtime.operation("Attach(userID)"):
            return await lifecycle.attach(self.runtime, user_id)

    async def detach(self) -> DetachResult:
        async with self.runtime.operation("Detach()"):
            return await lifecycle.detach(self.runtime)

    async def sync_then_detach(self) -> SyncThenDetachResult:
        """Sync and detach, up to three rounds while the pending count keeps shrinking (§4.6)."""
        previous: int | None = None
        last_sync: SyncReport | None = None
        pending = 0
        for round_number in range(1, _MAX_DETACH_ROUNDS + 1):
            last_sync = await self.sync()
            result = await self.detach()
            if result.outcome is DetachOutcome.DETACHED:
                return SyncThenDetachResult(last_sync, result, round_number, 0)
            pending = (await self.pending_sync_status()).pending_row_count
            if previous is not None and pending >= previous:
                return SyncThenDetachResult(last_sync, result, round_number, pending)
            previous = pending
        blocked = DetachResult(DetachOutcome.BLOCKED_UNSYNCED_DATA, pending)
        return SyncThenDetachResult(last_sync, blocked, _MAX_DETACH_ROUNDS, pending)

    async def uninstall_sync(self) -> None:
        async with self.runtime.operation("UninstallSync()"):
            await lifecycle.uninstall_sync(self.runtime)

    async def pending_sync_status(self) -> PendingSyncStatus:
        async with self.runtime.operation("PendingSyncStatus()"):
            return await lifecycle.pending_sync_status(self.runtime)

    async def sync_status(self) -> SyncStatus:
        async with self.runtime.operation("SyncStatus()"):
            return await lifecycle.sync_status(self.runtime)

    async def source_info(self) -> SourceInfo:
        async with self.runtime.operation("SourceInfo()"):
            return await lifecycle.source_info(self.runtime)

    async def last_bundle_seq_seen(self) -> int:
        async with self.runtime.operation("LastBundleSeqSeen()"):
            return await lifecycle.last_bundle_seq_seen(self.runtime)

    async def close(self) -> None:
        """Stop background sync, mark the client closed and release the database.

        Idempotent; waits for a running operation.
        """
        await self.stop()
        async with self.runtime.closing():
            pass
        await self.runtime.transport.aclose()

    # -- sync ------------------------------------------------------------------------------

    async def pull_to_stable(
        self,
        progress: ProgressCallback | None = None,
        *,
        bundle_progress: ProgressCallback | None = None,
    ) -> RemoteSyncReport:
        """Pull to the server's stable bundle (§7).

        ``bundle_progress(done, total)`` follows the applied bundles (bundle-sequence units);
        ``progress(rows_staged, rows_total)`` follows a snapshot rebuild when the server's
        history is pruned.
        """
        async with self.runtime.operation("PullToStable()"):
            return await pull.pull_to_stable(
                self.runtime, progress, bundle_progress=bundle_progress
            )

    async def rebuild(self, progress: ProgressCallback | None = None) -> RemoteSyncReport:
        """Replace local state with a server snapshot (§8); ``progress(rows_done, rows_total)``."""
        async with self.runtime.operation("Rebuild()"):
            return await snapshot.rebuild(self.runtime, progress)

    async def push_pending(self, progress: ProgressCallback | None = None) -> PushReport:
        """Push local changes (§5) with :attr:`resolver`, counting into :attr:`push_stats`.

        ``progress(rows_uploaded, rows_total)`` is called once per uploaded chunk.
        """
        async with self.runtime.operation("PushPending()"):
            return await _push(self.runtime, progress)

    async def sync(
        self,
        *,
        push_progress: ProgressCallback | None = None,
        pull_progress: ProgressCallback | None = None,
        snapshot_progress: ProgressCallback | None = None,
    ) -> SyncReport:
        """Push, then pull, under one lock acquisition (§9.1).

        The progress callbacks are those of :meth:`push_pending` (``push_progress``) and
        :meth:`pull_to_stable` (``pull_progress`` = its ``bundle_progress``,
        ``snapshot_progress`` = its ``progress``).
        """
        runtime = self.runtime
        async with runtime.operation("Sync()"):
            async with runtime.transaction() as conn:
                await ensure_connected(runtime, conn, "Sync()")
            push_outcome = (
                PushOutcome.SKIPPED_PAUSED if runtime.uploads_paused
                else await _push_everything(runtime, push_progress)
            )
            remote: RemoteSyncReport | None = None
            if not runtime.downloads_paused:
                remote = await pull.pull_to_stable(
                    runtime, snapshot_progress, bundle_progress=pull_progress
                )
            async with runtime.transaction() as conn:
                status = await read_sync_status(conn, runtime.counters)
        return SyncReport(
            push_outcome=push_outcome,
            remote_outcome=remote.outcome if remote else RemoteSyncOutcome.SKIPPED_PAUSED,
            status=status,
            restore=remote.restore if remote else None,
        )

    # -- background sync (§9.3, §9.4) ------------------------------------------------------

    async def start(
        self, *, on_error: ErrorCallback | None = None, on_sync: SyncCallback | None = None
    ) -> None:
        """Start the background upload and download loops and return at once.

        See :mod:`oversync_sa.client.background` for timing, watch mode and error handling.
        Call it after ``attach()`` (before, the loops wait, blocked, without requests). While
        the loops run, a foreground call may find the lock taken and raise
        :class:`~oversync_sa.client.errors.SyncOperationInProgressError` (the lock never
        waits, §12.21): retry it. Raises
        ``RuntimeError`` if background sync is already running, ``ClientClosedError`` after
        ``close()``.
        """
        if self.runtime.closed:
            raise ClientClosedError()
        if self._background is not None and self._background.running:
            raise RuntimeError("background sync is already running; stop() it first")
        self._background = BackgroundSync(self, on_error=on_error, on_sync=on_sync)
        self._background.start()

    async def stop(self, grace: float | None = 30.0) -> None:
        """Stop background sync (no-op when not running).

        Waiting stops at once; an operation in flight gets ``grace`` seconds to finish before it
        is cancelled (safe: every operation is restartable, §5.6).
        """
        if self._background is not None:
            await self._background.stop(grace)

    @property
    def background_status(self) -> BackgroundStatus:
        """A snapshot of background sync (``running=False`` before :meth:`start`)."""
        if self._background is not None:
            return self._background.status()
        idle = LoopStatus(LoopPhase.STOPPED, 0, 0, None, None, 0.0)
        return BackgroundStatus(False, idle, idle, DownloadMode.DECIDING, False)

    # -- pause toggles (§10.4) -------------------------------------------------------------

    def pause_uploads(self) -> None:
        self.runtime.uploads_paused = True

    def resume_uploads(self) -> None:
        self.runtime.uploads_paused = False

    def pause_downloads(self) -> None:
        self.runtime.downloads_paused = True

    def resume_downloads(self) -> None:
        self.runtime.downloads_paused = False

    # -- SQLAlchemy ------------------------------------------------------------------------

    def session(self, **kwargs: Any) -> SyncSession:
        """A new :class:`SyncSession` on the client's SQLite engine."""
        session = SyncSession(self.runtime.engine, **kwargs)
        session.sync_client = self
        return session


async def _push_everything(
    runtime: ClientRuntime, progress: ProgressCallback | None
) -> PushOutcome:
    """``Sync()``'s push: the frozen outbox, then whatever was already waiting behind it.

    A push that finds a durable outbox resends exactly that (§5.0 step 6) and leaves the rows
    written since the freeze in ``_sync_dirty_rows``; the pull that follows would then refuse
    (``DirtyStateRejectedError``) because of changes made *before* ``sync()`` was called. One
    more push sends them, so one ``sync()`` call uploads everything pending when it started.
    Writes made during the call can still make the pull refuse, as §9.1 says.
    """
    async with runtime.transaction() as conn:
        resending = await count_outbox_rows(conn) > 0
    outcome = (await _push(runtime, progress)).outcome
    if not resending:
        return outcome
    async with runtime.transaction() as conn:
        waiting = await count_dirty_rows(conn)
    if not waiting:
        return outcome
    second = (await _push(runtime, progress)).outcome
    return PushOutcome.COMMITTED if PushOutcome.COMMITTED in (outcome, second) else second


async def _push(runtime: ClientRuntime, progress: ProgressCallback | None) -> PushReport:
    return await push_pending(
        runtime, resolver=runtime.resolver, stats=runtime.push_stats, progress=progress
    )


class BlockingSyncClient:
    """Synchronous facade: runs a :class:`SyncClient` on a private event loop thread.

    For code that is not async (scripts, desktop apps, WSGI). Every method blocks until the
    async operation finishes and re-raises its exception. Background sync started with
    :meth:`start` runs on the private thread, and so do its callbacks. Build it with
    :meth:`create` (same arguments as :meth:`SyncClient.create`) and always :meth:`close` it:
    that stops the thread.
    """

    def __init__(self, client_factory: Coroutine[Any, Any, SyncClient]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="oversync-client")
        self._thread.start()
        try:
            self.client: SyncClient = self._run(client_factory)
        except BaseException:
            self._shutdown()
            raise

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> BlockingSyncClient:
        """``BlockingSyncClient(SyncClient.create(*args, **kwargs))``."""
        return cls(SyncClient.create(*args, **kwargs))

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def resolver(self) -> ConflictResolver:
        return self.client.resolver

    @resolver.setter
    def resolver(self, resolver: ConflictResolver | None) -> None:
        self.client.resolver = resolver

    def open(self) -> None:
        self._run(self.client.open())

    def attach(self, user_id: str) -> AttachResult:
        return self._run(self.client.attach(user_id))

    def detach(self) -> DetachResult:
        return self._run(self.client.detach())

    def sync_then_detach(self) -> SyncThenDetachResult:
        return self._run(self.client.sync_then_detach())

    def sync(self) -> SyncReport:
        return self._run(self.client.sync())

    def push_pending(self, progress: ProgressCallback | None = None) -> PushReport:
        return self._run(self.client.push_pending(progress))

    def pull_to_stable(self, progress: ProgressCallback | None = None) -> RemoteSyncReport:
        return self._run(self.client.pull_to_stable(progress))

    def rebuild(self, progress: ProgressCallback | None = None) -> RemoteSyncReport:
        return self._run(self.client.rebuild(progress))

    def sync_status(self) -> SyncStatus:
        return self._run(self.client.sync_status())

    def pending_sync_status(self) -> PendingSyncStatus:
        return self._run(self.client.pending_sync_status())

    def last_bundle_seq_seen(self) -> int:
        return self._run(self.client.last_bundle_seq_seen())

    def start(
        self, *, on_error: ErrorCallback | None = None, on_sync: SyncCallback | None = None
    ) -> None:
        """Start background sync on the private loop (callbacks run on its thread)."""
        self._run(self.client.start(on_error=on_error, on_sync=on_sync))

    def stop(self, grace: float | None = 30.0) -> None:
        self._run(self.client.stop(grace))

    @property
    def background_status(self) -> BackgroundStatus:
        return self.client.background_status

    def close(self) -> None:
        """Close the client (stopping background sync) and stop the private loop."""
        try:
            self._run(self.client.close())
            self._run(self.client.runtime.engine.dispose())
        finally:
            self._shutdown()
