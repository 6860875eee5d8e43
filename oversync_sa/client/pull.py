"""``pull_to_stable`` (CLIENT.md §7): page bundles up to a frozen ceiling and apply each one.

Each bundle is applied in its own SQLite transaction with foreign keys deferred and capture
suppressed (apply mode), and the checkpoint is advanced in that same transaction, so the
checkpoint only ever covers durably applied bundles. A failing bundle rolls back alone; earlier
bundles of the same call stay applied.

Apply speed: rows are resolved and encoded in Python once, then written with one
``executemany`` per (table, upsert|delete) group. Rows of one bundle carry the same version
and keys are independent under deferred FKs, so grouping is safe once duplicate keys are
collapsed to their last occurrence (the state sequential application would leave).

Deliberate differences from Go: a page with ``has_more`` but no bundles before the ceiling is a
protocol error (Go loops forever, §12.44); rows of a foreign schema are rejected; a pull from
checkpoint 0 whose first bundle is not bundle 1 is treated as ``history_pruned`` (the server
silently skips pruned history for ``after_bundle_seq = 0``; Go's client loses those rows).

A bundle whose COMMIT fails SQLite's deferred foreign-key check also switches to a keep-source
snapshot rebuild instead of failing the pull (Go returns the error, and since the bundle rolls
back and the checkpoint stays, every later pull fails the same way: a wedged device). Server
bundles are FK-consistent on their own, so such a failure means the local rows are not a state
the server ever had. The known way there: server-wins on a conflict whose row the server
deleted in a bundle this device has not pulled records that deletion's row version for the one
key the conflict names (CLIENT.md §6.3) - the rows the server's cascade removed with it, and
rows inserted under it by the bundles in between, are not named. The pull then skips the
parent's older versions by row version but applies those bundles' children, which reference a
parent that is already gone here. Local state cannot rebuild those rows, and no dirty rows or
outbox exist during a pull (§7.1), so the authoritative snapshot loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from sqlalchemy.exc import IntegrityError

from oversync_sa._crashpoints import crash_point
from oversync_sa.client.bulk_apply import ResolvedRow, apply_resolved
from oversync_sa.client.encoding import (
    SqlValue,
    WirePayload,
    wire_key_codec,
    wire_payload_decoder,
)
from oversync_sa.client.errors import (
    DestructiveTransitionInProgressError,
    DirtyStateRejectedError,
    PendingPushReplayError,
    ProtocolViolationError,
    RebuildRequiredError,
    SourceRecoveryRequiredError,
)
from oversync_sa.client.local_schema import fetch_all
from oversync_sa.client.progress import report_progress
from oversync_sa.client.results import RemoteSyncOutcome, RemoteSyncReport, SyncStatus
from oversync_sa.client.runtime import ClientRuntime
from oversync_sa.client.snapshot import ProgressCallback, rebuild_keep_source
from oversync_sa.client.state import (
    OperationKind,
    count_dirty_rows,
    count_outbox_rows,
    ensure_connected,
    load_operation,
    read_sync_status,
)
from oversync_sa.client.validation import TableInfo
from oversync_sa.errors import HistoryPrunedError
from oversync_sa.wire import Bundle, Op, PullResponse

__all__ = ["apply_bundle", "check_pull_preconditions", "pull_to_stable", "validate_pull_page"]

_log = logging.getLogger("oversync_sa.client.pull")

_OPERATION: Final = "PullToStable()"


async def check_pull_preconditions(runtime: ClientRuntime) -> None:
    """§7.1 steps 1-6, in order, without touching the network."""
    async with runtime.transaction() as conn:
        await ensure_connected(runtime, conn, _OPERATION)
        operation = await load_operation(conn)
        if operation.kind is OperationKind.SOURCE_RECOVERY:
            raise SourceRecoveryRequiredError(operation.reason)
        if operation.kind is not OperationKind.NONE:
            raise DestructiveTransitionInProgressError(operation.kind.value)
        (rebuild_row,) = await fetch_all(
            conn, "SELECT rebuild_required FROM _sync_attachment_state WHERE singleton_key = 1"
        )
        if rebuild_row[0]:
            raise RebuildRequiredError()
        outbound = await count_outbox_rows(conn)
        if outbound:
            raise PendingPushReplayError(outbound)
        dirty = await count_dirty_rows(conn)
        if dirty:
            _log.warning("pull rejected due to local dirty state (%d rows)", dirty)
            raise DirtyStateRejectedError(dirty)


def validate_pull_page(page: PullResponse, after: int) -> None:
    """The page rules of §7.2; raises :class:`ProtocolViolationError`."""

    def fail(message: str) -> None:
        raise ProtocolViolationError("pull_request", message)

    stable = page.stable_bundle_seq
    if stable < 0 or stable < after:
        fail(f"stable_bundle_seq {stable} is behind requested after_bundle_seq {after}")
    if page.bundles and stable == 0:
        fail("missing stable_bundle_seq")
    previous = after
    for bundle in page.bundles:
        if bundle.bundle_seq <= previous or bundle.bundle_seq > stable:
            fail(f"bundle_seq {bundle.bundle_seq} out of order (after {previous}, stable {stable})")
        if not bundle.source_id or bundle.source_bundle_id <= 0:
            fail(f"bundle {bundle.bundle_seq} lacks source_id/source_bundle_id")
        for row in bundle.rows:
            if not (row.schema and row.table and row.key) or row.row_version <= 0:
                fail(f"bundle {bundle.bundle_seq} has an invalid row for {row.table!r}")
            if row.op is not Op.DELETE and not row.payload:
                fail(f"bundle {bundle.bundle_seq} {row.op} row for {row.table!r} lacks payload")
        previous = bundle.bundle_seq


_Resolved = ResolvedRow


class _BundleBreaksLocalForeignKeys(Exception):
    """Internal: a bundle's COMMIT failed the deferred FK check (see the module docstring)."""

    def __init__(self, bundle_seq: int) -> None:
        super().__init__(f"bundle {bundle_seq} breaks a local foreign key")
        self.bundle_seq = bundle_seq


def _table(runtime: ClientRuntime, schema: str, table: str) -> TableInfo:
    if schema != runtime.schema:
        raise ProtocolViolationError(
            "pull_request", f"row of schema {schema!r} does not belong to {runtime.schema!r}"
        )
    try:
        return runtime.managed.table(table)
    except KeyError:
        raise ProtocolViolationError(
            "pull_request", f"table {table} is not configured for sync"
        ) from None


def _resolve(
    runtime: ClientRuntime, bundle: Bundle
) -> dict[str, tuple[TableInfo, dict[str, _Resolved]]]:
    """Wire rows -> per table ``key_json -> row``, in first-seen table order.

    A later row for the same key replaces the earlier one (the state sequential application
    would leave) but keeps the first one's position. This is the hot loop of pull: table
    lookup, key codec and payload decoder are set up once per distinct (schema, table) pair.
    """
    WireCodecs = tuple[
        TableInfo,
        dict[str, _Resolved],
        Callable[[Mapping[str, Any]], tuple[str, str]],
        Callable[[WirePayload, str | None], tuple[SqlValue, ...]],
    ]
    codecs: dict[tuple[str, str], WireCodecs] = {}
    tables: dict[str, tuple[TableInfo, dict[str, _Resolved]]] = {}
    delete = Op.DELETE
    for row in bundle.rows:
        entry = codecs.get((row.schema, row.table))
        if entry is None:
            info = _table(runtime, row.schema, row.table)
            rows = tables.setdefault(info.name, (info, {}))[1]
            entry = codecs[(row.schema, row.table)] = (
                info, rows, wire_key_codec(info), wire_payload_decoder(info)
            )
        _info, rows, key_codec, decode = entry
        local_pk, key_json = key_codec(row.key)
        values = None if row.op is delete else decode(row.payload, local_pk)
        rows[key_json] = (local_pk, row.row_version, values)
    return tables


async def apply_bundle(runtime: ClientRuntime, bundle: Bundle) -> int:
    """Apply one pulled bundle and advance the checkpoint in one transaction (§7.3).

    Returns how many rows were written (rows already at or past their version are skipped).
    Raises ``_BundleBreaksLocalForeignKeys`` when the writes succeeded but COMMIT failed the
    deferred foreign-key check (the transaction is rolled back).
    """
    by_table = _resolve(runtime, bundle)
    written: int | None = None
    try:
        async with runtime.transaction() as conn:
            written = await apply_resolved(conn, runtime.schema, by_table, bundle.bundle_seq)
            crash_point("client.pull.applied")
    except IntegrityError as exc:
        # With foreign keys deferred, an integrity error after every write succeeded comes from
        # the FK check at COMMIT; one raised by a write is not ours to handle.
        if written is None:
            raise
        raise _BundleBreaksLocalForeignKeys(bundle.bundle_seq) from exc
    return written


async def pull_to_stable(
    runtime: ClientRuntime,
    progress: ProgressCallback | None = None,
    *,
    bundle_progress: ProgressCallback | None = None,
) -> RemoteSyncReport:
    """Pull and apply every bundle up to the server's stable seq of the first page (§7.2).

    ``history_pruned`` switches to a keep-source snapshot rebuild, whose rows ``progress``
    reports as ``(rows_staged, snapshot_rows)``. ``bundle_progress(done, total)`` is called
    after each applied bundle in bundle-sequence units: ``done`` is how far the checkpoint moved
    since this call started, ``total`` the distance to the stable ceiling frozen by the first
    page, both in bundle sequence numbers (gap-free per user); treat the pair as a ratio, not
    as a count of callbacks.
    """
    await check_pull_preconditions(runtime)
    if runtime.downloads_paused:
        return RemoteSyncReport(RemoteSyncOutcome.SKIPPED_PAUSED, await _status(runtime))
    async with runtime.transaction() as conn:
        (row,) = await fetch_all(
            conn,
            "SELECT last_bundle_seq_seen FROM _sync_attachment_state WHERE singleton_key = 1",
        )
    after = int(row[0])
    start = after
    limit = runtime.config.download_limit
    target = 0
    applied = False
    while True:
        try:
            page = await runtime.transport.pull(after, limit, target)
        except HistoryPrunedError:
            _log.info("pull after %d hit pruned history; rebuilding from snapshot", after)
            return await rebuild_keep_source(runtime, progress)
        validate_pull_page(page, after)
        if after == 0 and page.bundles and page.bundles[0].bundle_seq > 1:
            # The server skips the floor check for after_bundle_seq = 0 and silently starts
            # above it (SERVER.md §6.2), so a device whose checkpoint is still 0 (it
            # initialized the scope empty or seeded it) would skip pruned bundles for good.
            # Bundle seqs are contiguous per user, so a gap before the first one is pruned
            # history: hydrate from a snapshot instead, as history_pruned would.
            _log.info(
                "pull from checkpoint 0 starts at bundle %d (history pruned below it);"
                " rebuilding from snapshot", page.bundles[0].bundle_seq,
            )
            return await rebuild_keep_source(runtime, progress)
        if target == 0:
            target = page.stable_bundle_seq
        elif page.stable_bundle_seq != target:
            raise ProtocolViolationError(
                "pull_request",
                f"pull response stable bundle seq changed from {target} to"
                f" {page.stable_bundle_seq}",
            )
        for bundle in page.bundles:
            try:
                await apply_bundle(runtime, bundle)
            except _BundleBreaksLocalForeignKeys as exc:
                _log.warning(
                    "bundle %d breaks a local foreign key (local rows diverged from the"
                    " server's, e.g. after a conflict the server won with a deletion this device"
                    " has not pulled); rebuilding from snapshot", exc.bundle_seq,
                    extra={"user": runtime.user_id, "source_id": runtime.source_id},
                )
                return await rebuild_keep_source(runtime, progress)
            applied = True
            after = bundle.bundle_seq
            await report_progress(bundle_progress, after - start, target - start)
        if after >= target:
            outcome = (
                RemoteSyncOutcome.APPLIED_INCREMENTAL if applied
                else RemoteSyncOutcome.ALREADY_AT_TARGET
            )
            runtime.counters.pulls += 1
            return RemoteSyncReport(outcome, await _status(runtime))
        if not page.bundles:
            raise ProtocolViolationError(
                "pull_request", f"pull ended before reaching stable bundle seq {target}"
            )
        if not page.has_more:
            raise ProtocolViolationError(
                "pull_request",
                f"pull ended early at bundle seq {after} before stable bundle seq {target}",
            )


async def _status(runtime: ClientRuntime) -> SyncStatus:
    async with runtime.transaction() as conn:
        return await read_sync_status(conn, runtime.counters)
