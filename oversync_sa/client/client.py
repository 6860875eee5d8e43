"""The user-facing client: :class:`SyncClient` (async) and :class:`BlockingSyncClient`.

Every public operation takes the client's operation lock without waiting (§4.1), so two
concurrent calls never interleave; the loser gets
:class:`~oversync_sa.client.errors.SyncOperationInProgressError`. ``close()`` is the exception:
it waits for a running operation.

SQLAlchemy integration: :meth:`SyncClient.session` hands out a :class:`SyncSession` bound to the
client's SQLite engine whose ``await session.sync()`` commits and runs a full sync.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from oversync_sa.client import lifecycle, pull, snapshot
from oversync_sa.client.config import ClientConfig
from oversync_sa.client.local_schema import initialize_database
from oversync_sa.client.results import (
    AttachResult,
    DetachOutcome,
    DetachResult,
    PendingSyncStatus,
    PushOutcome,
    PushReport,
    RemoteSyncOutcome,
    RemoteSyncReport,
    SourceInfo,
    SyncReport,
    SyncStatus,
    SyncThenDetachResult,
)
from oversync_sa.client.runtime import OWNERSHIP, ClientRuntime, database_identity, prepare_engine
from oversync_sa.client.snapshot import ProgressCallback
from oversync_sa.client.state import ensure_connected, read_sync_status
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

    Build it with :meth:`create`; then ``open()``, ``attach(user_id)``, and ``sync()``.
    """

    def __init__(self, runtime: ClientRuntime) -> None:
        self.runtime = runtime

    @classmethod
    async def create(
        cls,
        database: str | Path | AsyncEngine,
        base_url: str,
        token_provider: TokenProvider,
        config: ClientConfig,
        *,
        transport: SyncTransport | None = None,
        http_transport: Any = None,
    ) -> SyncClient:
        """Construct and validate (§1.2): ownership, metadata tables, schema, triggers.

        ``database`` is a file path or an ``AsyncEngine`` on SQLite (its connection events are
        configured, see :func:`~oversync_sa.client.runtime.prepare_engine`).
        ``http_transport`` (an ``httpx.AsyncBaseTransport``) plugs a fake server in.
        """
        engine = (
            database
            if isinstance(database, AsyncEngine)
            else create_async_engine(f"sqlite+aiosqlite:///{database}")
        )
        prepare_engine(engine)
        async with engine.connect() as conn:
            key = await database_identity(conn)
        OWNERSHIP.claim(key)
        try:
            async with engine.connect() as conn:
                await initialize_database(conn)
            async with engine.begin() as conn:
                managed = await validate_managed_tables(conn, config)
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
        return cls(runtime)

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
        """Mark the client closed and release the database (idempotent; waits for an op)."""
        async with self.runtime.closing():
            pass
        await self.runtime.transport.aclose()

    # -- sync ------------------------------------------------------------------------------

    async def pull_to_stable(self, progress: ProgressCallback | None = None) -> RemoteSyncReport:
        async with self.runtime.operation("PullToStable()"):
            return await pull.pull_to_stable(self.runtime, progress)

    async def rebuild(self, progress: ProgressCallback | None = None) -> RemoteSyncReport:
        async with self.runtime.operation("Rebuild()"):
            return await snapshot.rebuild(self.runtime, progress)

    async def push_pending(self) -> PushReport:
        async with self.runtime.operation("PushPending()"):
            return await _push(self.runtime)

    async def sync(self) -> SyncReport:
        """Push, then pull, under one lock acquisition (§9.1)."""
        runtime = self.runtime
        async with runtime.operation("Sync()"):
            async with runtime.transaction() as conn:
                await ensure_connected(runtime, conn, "Sync()")
            push_outcome = (
                PushOutcome.SKIPPED_PAUSED if runtime.uploads_paused
                else (await _push(runtime)).outcome
            )
            remote: RemoteSyncReport | None = None
            if not runtime.downloads_paused:
                remote = await pull.pull_to_stable(runtime)
            async with runtime.transaction() as conn:
                status = await read_sync_status(conn)
        return SyncReport(
            push_outcome=push_outcome,
            remote_outcome=remote.outcome if remote else RemoteSyncOutcome.SKIPPED_PAUSED,
            status=status,
            restore=remote.restore if remote else None,
        )

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


async def _push(runtime: ClientRuntime) -> PushReport:
    # Imported lazily: the push module is written in parallel and depends on this package.
    from oversync_sa.client.push import push_pending  # type: ignore[import-not-found,unused-ignore]

    report: PushReport = await push_pending(runtime)
    return report


class BlockingSyncClient:
    """Synchronous facade: runs a :class:`SyncClient` on a private event loop thread.

    For code that is not async. Every method blocks until the async operation finishes.
    """

    def __init__(self, client_factory: Coroutine[Any, Any, SyncClient]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="oversync-client")
        self._thread.start()
        self.client: SyncClient = self._run(client_factory)

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def open(self) -> None:
        self._run(self.client.open())

    def attach(self, user_id: str) -> AttachResult:
        return self._run(self.client.attach(user_id))

    def detach(self) -> DetachResult:
        return self._run(self.client.detach())

    def sync(self) -> SyncReport:
        return self._run(self.client.sync())

    def pull_to_stable(self) -> RemoteSyncReport:
        return self._run(self.client.pull_to_stable())

    def rebuild(self) -> RemoteSyncReport:
        return self._run(self.client.rebuild())

    def sync_status(self) -> SyncStatus:
        return self._run(self.client.sync_status())

    def pending_sync_status(self) -> PendingSyncStatus:
        return self._run(self.client.pending_sync_status())

    def close(self) -> None:
        """Close the client and stop the private loop."""
        try:
            self._run(self.client.close())
            self._run(self.client.runtime.engine.dispose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
