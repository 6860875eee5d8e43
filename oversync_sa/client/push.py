"""``push_pending``: upload local changes as one bundle and replay the committed result (§5).

The durable outbox makes every step restartable (§5.6): a push first resumes an existing outbox
or freezes the dirty rows into a new one, then - under the ``push_pending`` retry policy -
creates a push session, uploads the rows in ``upload_limit`` chunks, commits, fetches the
committed rows back and verifies their ``bundle_hash``. Only then is the bundle replayed as
authoritative state. A crash or error anywhere leaves the outbox in place: the next push sends
the same bundle again, and a commit whose reply was lost is recognised by the server's
``already_committed`` answer, fetched and replayed without a duplicate.

Server rejections that make the current source unusable put the client into durable source
recovery (§4.8); a committed bundle that can no longer be fetched triggers the snapshot rebuild
of §8.5; a structured conflict goes to the resolver (§6) and the push retries up to twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from oversync_sa._crashpoints import crash_point
from oversync_sa.client import snapshot
from oversync_sa.client.conflicts import ConflictResolver, resolve_conflict
from oversync_sa.client.errors import (
    DestructiveTransitionInProgressError,
    ForeignCommittedBundleError,
    OutboxStateError,
    ProtocolViolationError,
    PushConflictRetryExhaustedError,
    RebuildRequiredError,
    SourceRecoveryRequiredError,
    SourceReplacementDivergedError,
)
from oversync_sa.client.lease import drop_initialization_lease
from oversync_sa.client.outbox import (
    OutboxBundle,
    OutboxState,
    freeze_outbox,
    load_outbox,
    mark_committed_remote,
    retarget_outbox,
)
from oversync_sa.client.progress import ProgressCallback, report_progress
from oversync_sa.client.replay import (
    CommittedBundle,
    authoritative_transaction,
    replay_committed_bundle,
    reset_push_stage,
    stage_committed_page,
    verify_staged_bundle,
)
from oversync_sa.client.results import (
    PushOutcome,
    PushReport,
    PushTransferStats,
    SourceRecoveryCode,
    SyncStatus,
)
from oversync_sa.client.runtime import ClientRuntime
from oversync_sa.client.state import (
    OperationKind,
    OperationState,
    count_dirty_rows,
    count_outbox_rows,
    ensure_connected,
    ensure_source,
    fresh_source_id,
    load_operation,
    read_sync_status,
    save_operation,
    set_rebuild_required,
    switch_source,
)
from oversync_sa.client.transport import run_with_retry
from oversync_sa.errors import (
    InitializationExpiredError,
    InitializationStaleError,
    PushConflictError,
    PushSessionInvalidError,
    SourceRetiredError,
    WireError,
)
from oversync_sa.wire import (
    PushSessionChunkRequest,
    PushSessionCreateRequest,
    PushSessionCreateResponse,
    PushSessionStatus,
)

__all__ = ["MAX_PUSH_CONFLICT_AUTO_RETRIES", "PushTransferStats", "push_pending"]

_log = logging.getLogger("oversync_sa.client.push")

#: Automatic re-freezes after resolved conflicts that settled nothing (§6.5: 3 commit attempts
#: when no round makes progress; rounds that shrink the pending set do not count).
MAX_PUSH_CONFLICT_AUTO_RETRIES: Final = 2

_OPERATION: Final = "PushPending()"

#: Rejections on push-session create / commit that retire the current source (§4.8).
_CREATE_RECOVERY_CODES: Final = frozenset(
    {"history_pruned", "source_sequence_out_of_order", "source_retired"}
)
_COMMIT_RECOVERY_CODES: Final = frozenset({"source_sequence_changed", "source_retired"})


class _ReplayPruned(Exception):
    """Internal: our bundle is committed but its rows are no longer retained (§8.5)."""

    def __init__(self, source_bundle_id: int) -> None:
        super().__init__(f"committed source bundle {source_bundle_id} is pruned")
        self.source_bundle_id = source_bundle_id


@dataclass(frozen=True, slots=True)
class _Committed:
    bundle: OutboxBundle
    commit: CommittedBundle
    already_committed: bool


async def push_pending(
    runtime: ClientRuntime,
    *,
    resolver: ConflictResolver | None = None,
    stats: PushTransferStats | None = None,
    progress: ProgressCallback | None = None,
) -> PushReport:
    """Push every pending local change and replay the committed bundle (§5.0).

    The caller holds the client's operation lock. ``resolver`` decides conflicts (default:
    ``runtime.resolver``, and server wins when that is ``None`` too); ``stats`` collects
    transfer diagnostics (default: ``runtime.push_stats``). ``progress(rows_uploaded,
    rows_total)`` is called with ``0`` before the first chunk and after every uploaded chunk of
    a staging session (a retried attempt starts again from ``0``). Outcomes: ``no_change``
    (nothing to send, or every change resolved away), ``committed``, ``skipped_paused``.
    Failures leave the durable outbox for the next call.
    """
    counters = stats if stats is not None else runtime.push_stats
    chosen = resolver if resolver is not None else runtime.resolver
    async with runtime.transaction() as conn:
        pending = await count_dirty_rows(conn) + await count_outbox_rows(conn)
    # Each 409 names one conflicting row. Go gives up after 2 re-freezes whatever happened,
    # so a device back from a long offline spell with k > 3 stale rows gets an error from
    # every sync although each round settles a row. Here only rounds that settle nothing
    # (the resolver kept the row dirty: KeepLocal/KeepMerged against a moving server row)
    # spend the budget; a round that shrinks the pending set is progress and cannot repeat
    # more often than there are rows.
    idle_retries = 0
    while True:
        outcome = await _push_once(runtime, chosen, counters, progress)
        if outcome is not None:
            if outcome is PushOutcome.COMMITTED:
                runtime.counters.pushes += 1
            return PushReport(outcome, await _status(runtime))
        async with runtime.transaction() as conn:
            remaining = await count_dirty_rows(conn)
        if remaining == 0:
            return PushReport(PushOutcome.NO_CHANGE, await _status(runtime))
        if remaining >= pending:
            if idle_retries == MAX_PUSH_CONFLICT_AUTO_RETRIES:
                raise PushConflictRetryExhaustedError(idle_retries, remaining)
            idle_retries += 1
        pending = remaining
        _log.info(
            "retrying push after a resolved conflict (%d rows pending, %d/%d retries without"
            " progress)", remaining, idle_retries, MAX_PUSH_CONFLICT_AUTO_RETRIES,
        )


async def _status(runtime: ClientRuntime) -> SyncStatus:
    async with runtime.transaction() as conn:
        return await read_sync_status(conn, runtime.counters)


async def _push_once(
    runtime: ClientRuntime,
    resolver: ConflictResolver | None,
    stats: PushTransferStats,
    progress: ProgressCallback | None,
    *,
    failed_over: bool = False,
) -> PushOutcome | None:
    """One attempt; ``None`` when a conflict was resolved and the caller decides what next.

    A foreign ``already_committed`` bundle moves the outbox to a fresh source once and pushes
    again; a second collision (on a source id nobody else can know) is raised, never looped.
    """
    await _check_preconditions(runtime)
    if runtime.uploads_paused:
        return PushOutcome.SKIPPED_PAUSED
    bundle = await _outbound_bundle(runtime)
    if bundle is None:
        return PushOutcome.NO_CHANGE

    async def attempt() -> _Committed:
        return await _commit_and_fetch(runtime, stats, progress)

    try:
        committed = await run_with_retry(
            "push_pending", attempt, runtime.config.effective_retry_policy
        )
    except _ReplayPruned as pruned:
        _log.warning("%s; rebuilding from a snapshot", pruned)
        await snapshot.rebuild_after_pruned_replay(runtime, pruned.source_bundle_id)
        return PushOutcome.COMMITTED
    except PushConflictError as conflict:
        await resolve_conflict(runtime, bundle, conflict, resolver)
        return None

    crash_point("client.push.before_replay")
    hook = runtime.hooks.take("before_push_replay")
    if hook is not None:
        await hook(None)
    try:
        async with authoritative_transaction(runtime) as conn:
            await replay_committed_bundle(
                conn, runtime.managed, committed.bundle, committed.commit,
                already_committed=committed.already_committed,
            )
    except ForeignCommittedBundleError as foreign:
        if failed_over:
            raise
        await _fail_over_to_fresh_source(runtime, foreign)
        return await _push_once(runtime, resolver, stats, progress, failed_over=True)
    return PushOutcome.COMMITTED


async def _check_preconditions(runtime: ClientRuntime) -> None:
    """§5.0 steps 1-4, all local: a misuse never reaches the network."""
    async with runtime.transaction() as conn:
        attachment = await ensure_connected(runtime, conn, _OPERATION)
        operation = await load_operation(conn)
    if operation.kind is OperationKind.SOURCE_RECOVERY:
        raise SourceRecoveryRequiredError(operation.reason)
    if operation.kind not in (OperationKind.NONE, OperationKind.REMOTE_REPLACE):
        raise DestructiveTransitionInProgressError(operation.kind.value)
    if attachment.rebuild_required:
        raise RebuildRequiredError()


async def _outbound_bundle(runtime: ClientRuntime) -> OutboxBundle | None:
    """Resume the durable outbox, or freeze the dirty rows into a new one (§5.1)."""
    async with runtime.transaction() as conn:
        bundle = await load_outbox(conn)
        if bundle is not None:
            _log.info(
                "resuming %s outbox: source bundle %d, %d rows",
                bundle.state, bundle.source_bundle_id, bundle.row_count,
            )
            return bundle
        bundle = await freeze_outbox(
            conn, runtime.managed,
            source_id=runtime.source_id,
            initialization_id=runtime.pending_initialization_id,
        )
        hook = runtime.hooks.take("before_push_freeze") if bundle is not None else None
        if hook is not None:
            await hook(conn)
    return bundle


# --------------------------------------------------------------------------- commit (§5.2)


async def _commit_and_fetch(
    runtime: ClientRuntime, stats: PushTransferStats, progress: ProgressCallback | None
) -> _Committed:
    """One retryable attempt: create/upload/commit (or ``already_committed``), then fetch."""
    async with runtime.transaction() as conn:
        await reset_push_stage(conn)
        bundle = await load_outbox(conn)
    if bundle is None:
        raise OutboxStateError("the outbox disappeared during the push")
    request = PushSessionCreateRequest(
        source_bundle_id=bundle.source_bundle_id,
        planned_row_count=bundle.row_count,
        initialization_id=runtime.pending_initialization_id,
    )
    try:
        created = await _create_push_session(runtime, request)
    except WireError as exc:
        await _on_rejection(runtime, bundle, exc, _CREATE_RECOVERY_CODES)
        raise
    if created.status is PushSessionStatus.ALREADY_COMMITTED:
        commit = _already_committed(runtime, bundle, created)
        already = True
    else:
        commit = await _upload_and_commit(runtime, bundle, created, stats, progress)
        already = False
    async with runtime.transaction() as conn:
        bundle = await mark_committed_remote(
            conn, bundle, bundle_seq=commit.bundle_seq, bundle_hash=commit.bundle_hash
        )
        await conn.exec_driver_sql(
            "UPDATE _sync_attachment_state SET pending_initialization_id = ''"
            " WHERE singleton_key = 1"
        )
    runtime.pending_initialization_id = ""
    await _fetch_committed(runtime, commit, stats)
    return _Committed(bundle, commit, already)


async def _create_push_session(
    runtime: ClientRuntime, request: PushSessionCreateRequest
) -> PushSessionCreateResponse:
    """Create the push session, recognising a seed push whose commit reply was lost.

    The server checks the scope before it looks for a committed tuple (SERVER.md §11.10): once
    our seed commit made the scope INITIALIZED, re-sending the lease id is answered
    ``push_session_invalid``, never ``already_committed``. A crash between that commit and
    persisting its reply would then block every later push, so the tuple is asked for again
    without the id. If it is not committed, someone else initialised the scope after our lease
    ended: the lease is dropped as for ``initialization_stale`` (§4.10) and the error raised.
    """
    try:
        return await runtime.transport.create_push_session(request)
    except PushSessionInvalidError:
        if not request.initialization_id:
            raise
        retry = PushSessionCreateRequest(
            source_bundle_id=request.source_bundle_id,
            planned_row_count=request.planned_row_count,
        )
        created = await runtime.transport.create_push_session(retry)
        if created.status is PushSessionStatus.ALREADY_COMMITTED:
            _log.info("seed bundle %d was committed before a lost reply",
                      request.source_bundle_id)
            return created
        await runtime.transport.delete_push_session(created.push_id)
        await drop_initialization_lease(runtime)
        raise


def _already_committed(
    runtime: ClientRuntime, bundle: OutboxBundle, created: PushSessionCreateResponse
) -> CommittedBundle:
    problems = []
    if created.source_bundle_id != bundle.source_bundle_id:
        problems.append(f"source_bundle_id {created.source_bundle_id}")
    if created.source_id != runtime.source_id:
        problems.append(f"source_id {created.source_id!r}")
    if created.bundle_seq <= 0 or created.row_count <= 0 or not created.bundle_hash:
        problems.append("missing bundle_seq, row_count or bundle_hash")
    if problems:
        raise ProtocolViolationError(
            "push_session_create", "invalid already_committed reply: " + ", ".join(problems)
        )
    _log.info("source bundle %d was already committed as bundle %d",
              bundle.source_bundle_id, created.bundle_seq)
    return CommittedBundle(
        created.bundle_seq, created.source_id, created.source_bundle_id, created.row_count,
        created.bundle_hash,
    )


async def _upload_and_commit(
    runtime: ClientRuntime,
    bundle: OutboxBundle,
    created: PushSessionCreateResponse,
    stats: PushTransferStats,
    progress: ProgressCallback | None,
) -> CommittedBundle:
    push_id = created.push_id
    if (
        not push_id
        or created.planned_row_count != bundle.row_count
        or created.next_expected_row_ordinal != 0
    ):
        raise ProtocolViolationError("push_session_create", f"invalid staging reply {created!r}")
    stats.sessions_created += 1
    committed = False
    try:
        limit = runtime.config.upload_limit
        await report_progress(progress, 0, bundle.row_count)
        for start in range(0, bundle.row_count, limit):
            rows = [r.push_row() for r in bundle.rows[start : start + limit]]
            try:
                reply = await runtime.transport.upload_push_chunk(
                    push_id, PushSessionChunkRequest(start_row_ordinal=start, rows=rows)
                )
            except WireError as exc:
                await _on_rejection(runtime, bundle, exc, frozenset())
                raise
            if reply.push_id != push_id or reply.next_expected_row_ordinal != start + len(rows):
                raise ProtocolViolationError(
                    "push_chunk_upload",
                    f"chunk at {start}: reply {reply.push_id!r}"
                    f" next {reply.next_expected_row_ordinal}, expected {start + len(rows)}",
                )
            stats.chunks_uploaded += 1
            crash_point("client.push.chunk_uploaded")
            await report_progress(progress, start + len(rows), bundle.row_count)
        hook = runtime.hooks.take("before_push_commit")
        if hook is not None:
            await hook(None)
        try:
            reply_commit = await runtime.transport.commit_push_session(push_id)
            crash_point("client.push.commit_replied")
        except WireError as exc:
            await _on_rejection(runtime, bundle, exc, _COMMIT_RECOVERY_CODES)
            raise
        committed = True
    finally:
        if not committed:
            await runtime.transport.delete_push_session(push_id)
    if (
        reply_commit.bundle_seq <= 0
        or reply_commit.source_id != runtime.source_id
        or reply_commit.source_bundle_id <= 0
        or reply_commit.row_count <= 0
        or not reply_commit.bundle_hash
    ):
        raise ProtocolViolationError(
            "push_session_commit", f"invalid commit reply (bundle_hash etc.): {reply_commit!r}"
        )
    return CommittedBundle(
        reply_commit.bundle_seq, reply_commit.source_id, reply_commit.source_bundle_id,
        reply_commit.row_count, reply_commit.bundle_hash,
    )


# --------------------------------------------------------------------------- fetch (§5.4)


async def _fetch_committed(
    runtime: ClientRuntime, commit: CommittedBundle, stats: PushTransferStats
) -> None:
    """Page the committed rows into ``_sync_push_stage`` and verify the bundle hash."""
    async with runtime.transaction() as conn:
        await reset_push_stage(conn)
    after: int | None = None
    while True:
        try:
            page = await runtime.transport.committed_bundle_rows(
                commit.bundle_seq, runtime.config.download_limit, after
            )
        except WireError as exc:
            if exc.code == "history_pruned":
                raise _ReplayPruned(commit.source_bundle_id) from exc
            raise
        stats.committed_bundle_chunks_read += 1
        async with runtime.transaction() as conn:
            await stage_committed_page(
                conn, runtime.managed, commit, page, after=-1 if after is None else after
            )
        if not page.has_more:
            break
        after = page.next_row_ordinal
    async with runtime.transaction() as conn:
        await verify_staged_bundle(conn, runtime.managed, commit)


# --------------------------------------------------------------------------- rejections


async def _on_rejection(
    runtime: ClientRuntime,
    bundle: OutboxBundle,
    error: WireError,
    recovery_codes: frozenset[str],
) -> None:
    """Durable reactions to a push rejection; the caller re-raises ``error`` if this returns."""
    code = error.code
    if isinstance(error, InitializationExpiredError | InitializationStaleError):
        await drop_initialization_lease(runtime)
        return
    if code not in recovery_codes:
        return
    if bundle.state is OutboxState.COMMITTED_REMOTE:
        # The bundle is already committed: whatever the server now says about the source, the
        # snapshot contains our rows (§8.5; Go would wedge here on source_retired, §12.31).
        raise _ReplayPruned(bundle.source_bundle_id) from error
    preferred = error.replaced_by_source_id if isinstance(error, SourceRetiredError) else ""
    await _enter_source_recovery(runtime, SourceRecoveryCode(code), preferred)
    raise SourceRecoveryRequiredError(code, error.message) from error


async def _enter_source_recovery(
    runtime: ClientRuntime, code: SourceRecoveryCode, preferred: str
) -> None:
    """Persist source recovery and reserve the replacement source (§4.8), atomically."""
    async with runtime.transaction() as conn:
        operation = await load_operation(conn)
        reserved = operation.replacement_source_id
        if reserved and preferred and reserved != preferred:
            raise SourceReplacementDivergedError(reserved, preferred)
        chosen = reserved or preferred or await fresh_source_id(conn, avoid=[runtime.source_id])
        await ensure_source(conn, chosen)
        await set_rebuild_required(conn, True)
        await save_operation(
            conn,
            OperationState(
                kind=OperationKind.SOURCE_RECOVERY, reason=code.value,
                replacement_source_id=chosen,
            ),
        )
    _log.warning(
        "source %s rejected (%s); source recovery required", runtime.source_id, code,
        extra={"user": runtime.user_id, "source_id": runtime.source_id, "reason": code.value},
    )


async def _fail_over_to_fresh_source(
    runtime: ClientRuntime, foreign: ForeignCommittedBundleError
) -> None:
    """Leave a source that another writer commits under; keep every local change.

    The mismatch proves that ``(source, bundle id)`` belongs to someone else (a cloned database,
    or a twin that already pushes as the replacement a ``source_retired`` answer named). A
    rotated rebuild would retire that source *for the other writer too*, which would then rotate
    in turn and retire ours - so the outbox moves, verbatim, to a fresh source id instead, which
    the server accepts as ``(fresh, 1)`` like any new install's (SERVER.md §7.2). The foreign
    bundle is not applied here; the next pull brings it like any other. Dirty rows, local
    tables and the checkpoint are untouched.
    """
    old = runtime.source_id
    async with runtime.transaction() as conn:
        new = await fresh_source_id(conn, avoid=(old, foreign.source_id))
        await switch_source(conn, old, new)
        await retarget_outbox(conn, new)
        await reset_push_stage(conn)
    runtime.source_id = new
    _log.warning("%s; another writer uses source %s, continuing as fresh source %s",
                 foreign, old, new)
