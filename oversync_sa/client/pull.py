"""``pull_to_stable`` (CLIENT.md §7): page bundles up to a frozen ceiling and apply each one.

Each bundle is applied in its own SQLite transaction with foreign keys deferred and capture
suppressed (apply mode), and the checkpoint is advanced in that same transaction, so the
checkpoint only ever covers durably applied bundles. A failing bundle rolls back alone; earlier
bundles of the same call stay applied.

Apply speed: rows are resolved and encoded in Python once, a table's run of rows a column at
a time (one C-level pass per step: payload decoding, key checks and ``key_json``), then
written with multi-row statements per (table, upsert|delete) group. Rows of one bundle carry
the same version and keys are independent under deferred FKs, so grouping is safe once
duplicate keys are collapsed to their last occurrence (the state sequential application would
leave). A bundle's
transaction is one hop to the driver thread (``BEGIN`` to ``COMMIT``), on one connection per
page. (Resolving the next bundle on the event loop while the driver thread writes this one was
tried and measured no faster: the Python on both threads takes turns on the GIL, only SQLite's
own work would overlap.)

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
from collections.abc import Callable, Iterator, Mapping
from itertools import groupby
from operator import attrgetter
from typing import Any, Final

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa._crashpoints import crash_point
from oversync_sa.client.bulk_apply import (
    CommitRejectedError,
    ResolvedColumns,
    ResolvedRow,
    ResolvedTables,
    apply_resolved_transaction,
)
from oversync_sa.client.encoding import (
    SqlValue,
    WirePayload,
    wire_key_codec,
    wire_payload_decoder,
    wire_payload_struct_decoder,
    wire_text_key_prefix,
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
from oversync_sa.wire import Bundle, BundleRow, Op, PullResponse

__all__ = ["apply_bundle", "check_pull_preconditions", "pull_to_stable", "validate_pull_page"]

_log = logging.getLogger("oversync_sa.client.pull")

_OPERATION: Final = "PullToStable()"

_ROW_TABLE: Final = attrgetter("schema", "table")


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
    delete = Op.DELETE  # an enum member lookup costs as much as the rest of a row's checks
    for bundle in page.bundles:
        if bundle.bundle_seq <= previous or bundle.bundle_seq > stable:
            fail(f"bundle_seq {bundle.bundle_seq} out of order (after {previous}, stable {stable})")
        if not bundle.source_id or bundle.source_bundle_id <= 0:
            fail(f"bundle {bundle.bundle_seq} lacks source_id/source_bundle_id")
        for row in bundle.rows:
            if not (row.schema and row.table and row.key) or row.row_version <= 0:
                fail(f"bundle {bundle.bundle_seq} has an invalid row for {row.table!r}")
            if row.op is not delete and not row.payload:
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


_Codecs = tuple[
    dict[str, _Resolved],
    str,
    str | None,
    Callable[[Mapping[str, Any]], tuple[str, str]],
    Callable[[msgspec.Raw], Any] | None,
    Callable[[WirePayload, str | None], tuple[SqlValue, ...]],
]


def _resolve(runtime: ClientRuntime, bundle: Bundle) -> ResolvedTables:
    """Wire rows -> per table ``key_json -> row``, in first-seen table order.

    A later row for the same key replaces the earlier one (the state sequential application
    would leave) but keeps the first one's position. This is the hot loop of pull: table
    lookup, key codec and payload decoder are set up once per distinct (schema, table) pair,
    and each run of rows of one table is resolved column by column (:func:`_run_columns`);
    a run that has anything unusual goes row by row (:func:`_resolve_rows`) instead, through
    the codec and decoder, which give the same results and raise the errors. A bundle of one
    table's distinct keys at one version, without deletes (the usual one), is handed on as
    those columns (:class:`ResolvedColumns`), without a tuple and dict entry per row.
    """
    runs = _table_runs(bundle.rows)
    if len(runs) == 1:
        # The whole bundle is one table: it may stay in columns (ResolvedColumns).
        info = _table(runtime, *runs[0][0])
        return {info.name: (info, _resolve_table(_codecs(info, {}), runs[0][1]))}
    codecs: dict[tuple[str, str], _Codecs] = {}
    tables: dict[str, tuple[TableInfo, dict[str, _Resolved]]] = {}
    for schema_table, run in runs:
        entry = codecs.get(schema_table)
        if entry is None:
            info = _table(runtime, *schema_table)
            rows = tables.setdefault(info.name, (info, {}))[1]
            entry = codecs[schema_table] = _codecs(info, rows)
        columns = _run_columns(entry, run)
        if columns is None:
            _resolve_rows(entry, run)
        else:
            entry[0].update(_resolved_rows(*columns))
    return tables


def _resolve_table(entry: _Codecs, run: list[BundleRow]) -> dict[str, _Resolved] | ResolvedColumns:
    """All of a bundle's rows, of one table: as columns if they fit, else in ``entry``'s dict."""
    columns = _run_columns(entry, run)
    if columns is None:
        _resolve_rows(entry, run)
        return entry[0]
    resolved = ResolvedColumns.of(*columns)
    if resolved is None:
        entry[0].update(_resolved_rows(*columns))
        return entry[0]
    return resolved


def _codecs(info: TableInfo, rows: dict[str, _Resolved]) -> _Codecs:
    return (
        rows,
        info.key_json_name,
        wire_text_key_prefix(info),
        wire_key_codec(info),
        wire_payload_struct_decoder(info),
        wire_payload_decoder(info),
    )


def _table_runs(rows: list[BundleRow]) -> list[tuple[tuple[str, str], list[BundleRow]]]:
    """``rows`` split into runs of one (schema, table), in order.

    A bundle's rows usually all belong to one table; looking for a row of another one is
    about five times as fast as grouping row by row.
    """
    if not rows:
        return []
    schema, table = rows[0].schema, rows[0].table
    if not [row for row in rows if row.table != table or row.schema != schema]:
        return [((schema, table), rows)]
    return [(schema_table, list(group)) for schema_table, group in groupby(rows, _ROW_TABLE)]


_Columns = tuple[list[str], list[str], list[int], list[tuple[SqlValue, ...] | None]]


def _resolved_rows(
    key_jsons: list[str], local_pks: list[str], versions: list[int], values: list[Any]
) -> Iterator[tuple[str, _Resolved]]:
    """:func:`_run_columns` as ``(key_json, row)`` pairs (a later key replaces an earlier one)."""
    return zip(key_jsons, zip(local_pks, versions, values, strict=True), strict=True)


def _run_columns(entry: _Codecs, run: list[BundleRow]) -> _Columns | None:
    """A run of one table's rows resolved a column at a time, or ``None``.

    ``(key_jsons, local_pks, versions, values)`` in run order, ``values`` ``None`` for a
    DELETE. Only for the common case that :func:`_resolve_rows` inlines: plain text keys that
    need no escaping and payloads the table's struct decoder takes as they are (no BLOB
    column). The
    payloads are decoded by one ``map`` over the C decoder, and the keys checked and encoded
    by one string operation each, instead of Python statements per row; anything else (an
    unusual key, a payload the struct rejects) leaves the whole run to
    :func:`_resolve_rows`, so results and errors are the row-by-row ones.
    """
    _rows, key_name, key_prefix, _key_codec, decode_struct, _decode = entry
    if key_prefix is None or decode_struct is None:
        return None
    try:
        local_pks: list[str] = [row.key[key_name] for row in run]
        joined = "".join(local_pks)
    except (KeyError, TypeError):  # a key without the member, or not a string
        return None
    # All printable, no quote, no backslash: each key's JSON string is the key itself.
    if not joined.isprintable() or '"' in joined or "\\" in joined:
        return None
    delete = Op.DELETE
    payloads = [row.payload for row in run if row.op is not delete]
    try:
        values: list[tuple[SqlValue, ...] | None] = list(
            map(msgspec.structs.astuple, map(decode_struct, payloads))
        )
    except (msgspec.DecodeError, TypeError):  # TypeError: a payload that is not JSON text
        return None
    if len(values) < len(run):  # DELETE rows: no values
        decoded = iter(values)
        values = [None if row.op is delete else next(decoded) for row in run]
    # Printable keys hold no NUL, so one join and split build every key_json.
    key_jsons = (key_prefix + ('"}\0' + key_prefix).join(local_pks) + '"}').split("\0")
    return key_jsons, local_pks, [row.row_version for row in run], values


def _resolve_rows(entry: _Codecs, run: list[BundleRow]) -> None:
    """Resolve a run of one table's rows row by row (any key or payload, every error)."""
    rows, key_name, key_prefix, key_codec, decode_struct, decode = entry
    delete = Op.DELETE
    astuple = msgspec.structs.astuple
    decode_error = msgspec.DecodeError
    for row in run:
        value = row.key.get(key_name)
        if (
            key_prefix is not None
            and type(value) is str
            and value.isprintable()
            and '"' not in value
            and "\\" not in value
        ):
            local_pk, key_json = value, key_prefix + value + '"}'
        else:
            local_pk, key_json = key_codec(row.key)
        values: tuple[SqlValue, ...] | None
        if row.op is delete:
            values = None
        elif decode_struct is not None and type(row.payload) is msgspec.Raw:
            try:
                values = astuple(decode_struct(row.payload))
            except decode_error:
                values = decode(row.payload, local_pk)
        else:
            values = decode(row.payload, local_pk)
        rows[key_json] = (local_pk, row.row_version, values)


def _applied_crash_point() -> None:
    crash_point("client.pull.applied")


async def apply_bundle(
    runtime: ClientRuntime, bundle: Bundle, conn: AsyncConnection | None = None
) -> int:
    """Apply one pulled bundle and advance the checkpoint in one transaction (§7.3).

    Returns how many rows were written (rows already at or past their version are skipped).
    Raises ``_BundleBreaksLocalForeignKeys`` when the writes succeeded but COMMIT failed the
    deferred foreign-key check (the transaction is rolled back). ``conn``: a connection outside
    any transaction to run it on (pull's page loop); else one is checked out for the bundle.
    """
    by_table = _resolve(runtime, bundle)
    if conn is None:
        async with runtime.engine.connect() as own:
            return await _apply_resolved(runtime, own, bundle, by_table)
    return await _apply_resolved(runtime, conn, bundle, by_table)


async def _apply_resolved(
    runtime: ClientRuntime, conn: AsyncConnection, bundle: Bundle, by_table: ResolvedTables
) -> int:
    try:
        return await apply_resolved_transaction(
            conn, runtime.schema, by_table, bundle.bundle_seq, _applied_crash_point
        )
    except CommitRejectedError as exc:
        # With foreign keys deferred, an integrity error after every write succeeded comes
        # from the FK check at COMMIT; one raised by a write is not ours to handle.
        if isinstance(exc.error, IntegrityError):
            raise _BundleBreaksLocalForeignKeys(bundle.bundle_seq) from exc.error
        raise exc.error from exc.error.orig


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
    # One connection for every page's bundles (each still its own transaction): a checkout and
    # the pool's reset-on-return (a driver hop) per page or bundle cost about a quarter of
    # resolving a bundle's rows. Released before a snapshot rebuild, which needs its own.
    async with runtime.engine.connect() as conn:
        applied = await _apply_pages(runtime, conn, bundle_progress)
    if applied is None:
        return await rebuild_keep_source(runtime, progress)
    runtime.counters.pulls += 1
    outcome = (
        RemoteSyncOutcome.APPLIED_INCREMENTAL if applied
        else RemoteSyncOutcome.ALREADY_AT_TARGET
    )
    return RemoteSyncReport(outcome, await _status(runtime))


async def _apply_pages(
    runtime: ClientRuntime, conn: AsyncConnection, bundle_progress: ProgressCallback | None
) -> bool | None:
    """Page to the stable ceiling on ``conn``; whether a bundle was applied, or ``None`` when
    the pull must continue as a snapshot rebuild (pruned history, a bundle breaking a local
    foreign key)."""
    async with conn.begin():  # ended before the first bundle, which begins its own
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
            return None
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
            return None
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
                await apply_bundle(runtime, bundle, conn)
            except _BundleBreaksLocalForeignKeys as broken:
                _log.warning(
                    "bundle %d breaks a local foreign key (local rows diverged from the"
                    " server's, e.g. after a conflict the server won with a deletion this"
                    " device has not pulled); rebuilding from snapshot", broken.bundle_seq,
                    extra={"user": runtime.user_id, "source_id": runtime.source_id},
                )
                return None
            applied = True
            after = bundle.bundle_seq
            await report_progress(bundle_progress, after - start, target - start)
        if after >= target:
            return applied
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
