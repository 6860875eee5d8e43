"""Server-originated writes: ``within_sync_bundle`` and ``ScopeManager`` (SERVER.md §7.3, §3.7).

All bundle-producing entry points share one skeleton::

    lock user -> transaction -> scope state -> SET CONSTRAINTS ALL DEFERRED
    -> source sequence check (locked) -> bundle context -> business writes
    -> finalise -> activate source -> retention -> commit

:func:`user_transaction` (locks) covers the first two steps and the deferral, :mod:`.scope`
the third, and :func:`run_bundle` everything from the bundle context to retention. The push
commit reuses :func:`run_bundle` with its staged-row apply as the ``writes`` step; only the
policy around it (which scope states are allowed, which sequence error is raised, what an
empty bundle means) differs per entry point.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from oversync_sa.errors import (
    HistoryPrunedError,
    OversyncError,
    ScopeWriteNoCapturedChangesError,
    SourceSequenceOutOfOrderError,
)
from oversync_sa.server.context import BundleContext, enable_scope_filter, set_bundle_context
from oversync_sa.server.finalize import BundleSequencing, CommittedBundle, finalize_bundle
from oversync_sa.server.locks import user_transaction
from oversync_sa.server.orm_scope import scoped_session
from oversync_sa.server.scope import (
    ScopeRecord,
    ScopeState,
    lock_scope,
    require_initialized,
    transition_to_initialized,
)
from oversync_sa.server.sources import next_expected_source_bundle_id

if TYPE_CHECKING:
    from oversync_sa.server.service import SyncService

__all__ = [
    "BundleSource",
    "BundleWriter",
    "ScopeManager",
    "ScopeWriteInvalidError",
    "ScopeWriteResult",
    "run_bundle",
    "within_sync_bundle",
]

_log = logging.getLogger("oversync_sa.server.writes")


class ScopeWriteInvalidError(OversyncError, ValueError):
    """A server-originated write was called with missing or blank arguments."""


@dataclass(frozen=True, slots=True)
class BundleSource:
    """The ``(source_id, source_bundle_id)`` tuple a bundle is attributed to."""

    source_id: str
    source_bundle_id: int


@dataclass(frozen=True, slots=True)
class ScopeWriteResult:
    """Outcome of :meth:`ScopeManager.exec_write`."""

    auto_initialized: bool
    bundle: CommittedBundle


class BundleWriter:
    """What a write callback receives: the bundle transaction, Core and (on demand) ORM.

    ``connection`` is the locked connection inside the open bundle transaction; Core statements
    on registered tables must constrain ``_sync_scope_id`` themselves, because the owner guard
    rejects any statement that touches another scope's row (§3.1, §11.6).

    :meth:`orm_session` returns an :class:`AsyncSession` on the same transaction for models
    declared without the scope column (see :mod:`.orm_scope`). Requesting it switches the owner
    guard to *filter* mode for the rest of the transaction: UPDATE/DELETE rows of other scopes
    are skipped instead of rejected, also for Core statements issued afterwards.
    """

    def __init__(
        self,
        service: SyncService,
        connection: AsyncConnection,
        scope: ScopeRecord,
        source: BundleSource,
        model_schema: str | None,
    ) -> None:
        self.connection = connection
        self.scope = scope
        self.source = source
        self._service = service
        self._model_schema = model_schema
        self._session: AsyncSession | None = None

    @property
    def user_id(self) -> str:
        """The scope (user) every row written here belongs to."""
        return self.scope.user_id

    async def orm_session(self) -> AsyncSession:
        """The scope-filtered ORM session of this bundle (created on first call).

        Do not commit or close it: pending changes are flushed and the session is closed when the
        callback returns, and the bundle transaction commits only after finalisation.
        """
        if self._session is None:
            schema = self._model_schema or _single_schema(self._service)
            await enable_scope_filter(self.connection)
            self._session = await scoped_session(
                self.connection, self._service.runtime, schema=schema
            )
        return self._session

    async def _flush_and_close(self) -> None:
        if self._session is not None:
            try:
                await self._session.flush()
            finally:
                await self._session.close()


BundleCallback = Callable[[BundleWriter], Awaitable[None]]


def _single_schema(service: SyncService) -> str:
    schemas = {t.schema for t in service.runtime.tables}
    if len(schemas) != 1:
        raise ScopeWriteInvalidError(
            "registered tables span several schemas; pass model_schema for the ORM session"
        )
    return schemas.pop()


async def run_bundle(
    conn: AsyncConnection,
    service: SyncService,
    context: BundleContext,
    writes: Callable[[], Awaitable[None]],
) -> CommittedBundle | None:
    """Bundle context -> ``writes`` -> finalise -> activate source -> retention.

    The caller holds the user lock, has checked the scope and the source sequence, and deferred
    constraints. Returns ``None`` (and changes no sync state) when nothing visible was captured;
    the caller decides whether that is an error.
    """
    await set_bundle_context(conn, context)
    await writes()
    config = service.config
    watch = config.bundle_change_watch
    # Activation and retention ride on finalisation's persist statement (round trips).
    return await finalize_bundle(
        conn,
        service.runtime,
        user_pk=context.user_pk,
        source_id=context.source_id,
        source_bundle_id=context.source_bundle_id,
        notify_channel=watch.notify_channel if watch.enabled else None,
        sequencing=BundleSequencing(
            user_id=context.user_id,
            window=config.retained_bundles_per_user,
            batch=config.retention_prune_batch_size,
        ),
    )


async def _check_source_sequence(
    conn: AsyncConnection, scope: ScopeRecord, source: BundleSource
) -> None:
    expected, max_committed = await next_expected_source_bundle_id(
        conn, scope.user_pk, scope.user_id, source.source_id
    )
    if source.source_bundle_id < expected:
        raise HistoryPrunedError(
            f"source_bundle_id {source.source_bundle_id} of source {source.source_id} for user "
            f"{scope.user_id} is at or below the committed watermark {max_committed}"
        )
    if source.source_bundle_id > expected:
        raise SourceSequenceOutOfOrderError(
            f"source {source.source_id} for user {scope.user_id} expected source_bundle_id "
            f"{expected}, got {source.source_bundle_id}"
        )


async def _bundle_body(
    conn: AsyncConnection,
    service: SyncService,
    scope: ScopeRecord,
    source: BundleSource,
    callback: BundleCallback,
    model_schema: str | None,
) -> CommittedBundle | None:
    """Steps 3-6 of ``WithinSyncBundle`` on an already locked, checked scope.

    The caller's :func:`user_transaction` deferred the constraints.
    """
    await _check_source_sequence(conn, scope, source)
    writer = BundleWriter(service, conn, scope, source, model_schema)

    async def writes() -> None:
        try:
            await callback(writer)
        except BaseException:
            if writer._session is not None:
                await writer._session.close()
            raise
        await writer._flush_and_close()

    context = BundleContext(
        user_id=scope.user_id,
        user_pk=scope.user_pk,
        source_id=source.source_id,
        source_bundle_id=source.source_bundle_id,
    )
    return await run_bundle(conn, service, context, writes)


def _validate(user_id: str, source: BundleSource, callback: object) -> None:
    if not user_id.strip():
        raise ScopeWriteInvalidError("user_id is required")
    if not source.source_id.strip():
        raise ScopeWriteInvalidError("bundle source_id is required")
    if source.source_bundle_id <= 0:
        raise ScopeWriteInvalidError("bundle source_bundle_id must be > 0")
    if callback is None:
        raise ScopeWriteInvalidError("bundle callback is required")


async def within_sync_bundle(
    service: SyncService,
    user_id: str,
    source: BundleSource,
    callback: BundleCallback,
    *,
    model_schema: str | None = None,
) -> CommittedBundle | None:
    """Run ``callback`` as exactly one bundle of ``source`` for an initialized scope.

    ``source.source_bundle_id`` must be exactly the source's next expected id: lower raises
    :class:`HistoryPrunedError`, higher :class:`SourceSequenceOutOfOrderError`, a retired source
    :class:`SourceRetiredError`; there is no already-committed replay. The scope must be
    ``INITIALIZED`` (:class:`ScopeInitializingError` / :class:`ScopeUninitializedError`).

    The transaction is never retried: the callback runs at most once. If it captured nothing
    visible, the transaction still commits (writes to unregistered tables persist), no sequence
    number is consumed and ``None`` is returned.
    """
    _validate(user_id, source, callback)
    async with service.operation(), user_transaction(
        service.engine, user_id, defer_constraints=True
    ) as conn:
        scope = require_initialized(await lock_scope(conn, user_id), user_id)
        return await _bundle_body(conn, service, scope, source, callback, model_schema)


class ScopeManager:
    """Server-side writes into a scope, as a named writer with automatic sequencing.

    Writer ids share the per-scope source namespace with client source ids: each
    ``(scope, writer)`` has its own sequence, starting at 1.
    """

    def __init__(self, service: SyncService, *, model_schema: str | None = None) -> None:
        self._service = service
        self._model_schema = model_schema

    async def exec_write(
        self, scope_id: str, callback: BundleCallback, *, writer_id: str
    ) -> ScopeWriteResult:
        """Run ``callback`` as the next bundle of ``writer_id`` in ``scope_id``.

        An ``UNINITIALIZED`` scope is initialized by the writer (``auto_initialized``); a live
        ``INITIALIZING`` lease is never bypassed (:class:`ScopeInitializingError`). A callback
        that captures nothing visible raises :class:`ScopeWriteNoCapturedChangesError` and
        rolls back the whole transaction, auto-initialization and unregistered writes included.
        """
        scope_id = scope_id.strip()
        writer_id = writer_id.strip()
        if not scope_id:
            raise ScopeWriteInvalidError("scope_id is required")
        if not writer_id:
            raise ScopeWriteInvalidError("writer_id is required")
        if callback is None:
            raise ScopeWriteInvalidError("callback is required")
        service = self._service
        async with service.operation(), user_transaction(
            service.engine, scope_id, defer_constraints=True
        ) as conn:
            scope = await lock_scope(conn, scope_id)
            auto_initialized = False
            if scope.state is ScopeState.UNINITIALIZED:
                scope = await transition_to_initialized(conn, scope, writer_id)
                auto_initialized = True
            scope = require_initialized(scope, scope_id)
            next_id, _ = await next_expected_source_bundle_id(
                conn, scope.user_pk, scope_id, writer_id
            )
            bundle = await _bundle_body(
                conn,
                service,
                scope,
                BundleSource(writer_id, next_id),
                callback,
                self._model_schema,
            )
            if bundle is None:
                raise ScopeWriteNoCapturedChangesError(
                    f"scope write for {scope_id} via {writer_id} produced no visible "
                    "registered-table effects"
                )
        _log.debug(
            "scope write %s via %s committed bundle %d", scope_id, writer_id, bundle.bundle_seq
        )
        return ScopeWriteResult(auto_initialized=auto_initialized, bundle=bundle)
