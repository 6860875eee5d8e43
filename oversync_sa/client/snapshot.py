"""Snapshot rebuilds (CLIENT.md §8): download into ``_sync_snapshot_stage``, swap atomically.

A snapshot is paged chunk by chunk into the stage (one transaction per chunk, so memory is
bounded by ``snapshot_chunk_rows``), then swapped in by :func:`_swap` in one transaction that
clears the managed tables, applies the staged rows in batches and moves the checkpoint. Any
failure rolls the swap back completely; only ``rebuild_required = 1`` (set before the download)
and the stage survive, so push and pull stay blocked until a rebuild succeeds (§12.16).

Entry points:

* :func:`rebuild` - the public ``Rebuild`` (keep source §8.2, or rotate during source
  recovery §8.3);
* :func:`rebuild_keep_source` - the pull's reaction to ``history_pruned`` (§7.2);
* :func:`rebuild_after_pruned_replay` - the push's committed-but-pruned path (§8.5);
* :func:`finalize_remote_replace` - the ``remote_authoritative`` attach (§8.4).

Differences from Go: the remote replace writes the target attachment and applies the stage in
the same transaction (§8.4 steps 2-3), so a failed apply keeps the recorded stage and the next
``attach`` finishes offline instead of re-downloading. And pending edits survive the snapshots
that happen while the user may have unsent changes (below).

Carried dirty rows
------------------
The rotated rebuild of source recovery (§8.3) and the pruned-replay rebuild (§8.5) run with
``_sync_dirty_rows`` possibly non-empty: edits made while a push was stuck. Go refuses the first
(a dead end: push, pull and app writes are refused too, §12.42) and wipes them in the second.
Here both swaps re-apply each dirty row's local intent (upsert its after-image, or delete) over
the snapshot - after the preserved outbox, since the edits came later - and keep the dirty rows
queued, so the next push uploads them after the outbox. Their ``base_row_version`` is decided
like the outbox's, which keeps its captured bases (§8.1.1 step 6):

* An edit of a key outside the outbox keeps the base it was captured against. Nothing of ours
  touched that row since (the outbox holds every unreplayed write of this device), so the base
  equals the snapshot's version unless another writer changed the row meanwhile - and then the
  push conflicts and the resolver decides, as for any offline edit. Re-basing on the snapshot
  would instead overwrite that writer's change unseen.
* An edit of a key inside the outbox was made on top of the frozen intent. When the snapshot
  already shows that intent (the bundle was committed: a lost commit reply, then pruned
  history), the frozen row leaves the outbox - pushed again it would only conflict with our
  own write - and the edit is based on the snapshot's version of the row, as the replay of the
  bundle would have done (§5.5). Otherwise the frozen row is pushed first, and its replay or
  its conflict resolution re-bases the edit as on the ordinary path.

Edits that break a local constraint next to the server's rows are dropped, logged, rather
than failing the swap forever (:func:`_swap_without_edits`). The keep-source ``rebuild()`` and
the pull's switch to a snapshot still require no dirty rows when they start (§8.2): without a
stuck outbox there is nothing in the way of pushing them first. Rows the application writes
while their snapshot downloads are carried the same way (:func:`rebuild_keep_source`).
"""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, NoReturn

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa._crashpoints import crash_point
from oversync_sa.client.encoding import (
    SqlValue,
    WirePayload,
    delete_sql,
    key_json_decoder,
    key_json_sql,
    local_payload_to_wire,
    local_pk_from_key_json,
    local_pk_to_sql,
    quote_identifier,
    upsert_sql,
    wire_key_codec,
    wire_payload_decoder,
    wire_payload_to_values,
)
from oversync_sa.client.errors import (
    AttachLocalStateConflictError,
    AttachRequiredError,
    DirtyStateRejectedError,
    PendingPushReplayError,
    ProtocolViolationError,
    SourceReplacementDivergedError,
)
from oversync_sa.client.lease import restore_dirty_rows, take_dirty_rows
from oversync_sa.client.local_schema import SYNC_TIMESTAMP_SQL, fetch_all
from oversync_sa.client.outbox import OutboxBundle, OutboxRow, drop_outbox_rows, load_outbox
from oversync_sa.client.replay import stored_as
from oversync_sa.client.results import RemoteSyncOutcome, RemoteSyncReport, RestoreSummary
from oversync_sa.client.runtime import ClientRuntime
from oversync_sa.client.state import (
    BindingState,
    OperationKind,
    OperationState,
    OutboxState,
    clear_managed_tables,
    count_dirty_rows,
    count_outbox_rows,
    ensure_connected,
    ensure_source,
    fresh_source_id,
    load_attachment,
    load_operation,
    read_sync_status,
    save_attachment,
    save_operation,
    set_rebuild_required,
)
from oversync_sa.client.triggers import set_apply_mode
from oversync_sa.client.validation import TableInfo
from oversync_sa.errors import OversyncError, SourceRetiredError
from oversync_sa.wire import (
    SnapshotChunkResponse,
    SnapshotSession,
    SnapshotSourceReplacement,
    SourceReplacementReason,
)

__all__ = [
    "ProgressCallback",
    "finalize_remote_replace",
    "rebuild",
    "rebuild_after_pruned_replay",
    "rebuild_keep_source",
]

_log = logging.getLogger("oversync_sa.client.snapshot")

#: Called with ``(rows_done, rows_total)`` while a snapshot is staged and once after the swap.
ProgressCallback = Callable[[int, int], Awaitable[None] | None]

_APPLY_BATCH: Final = 1000
_UPSERT_ROW_STATE: Final = (
    "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version, deleted,"
    f" updated_at) VALUES (?, ?, ?, ?, ?, {SYNC_TIMESTAMP_SQL})"
    " ON CONFLICT (schema_name, table_name, key_json) DO UPDATE SET"
    " row_version = excluded.row_version, deleted = excluded.deleted,"
    " updated_at = excluded.updated_at"
)


@dataclass(frozen=True, slots=True)
class _Session:
    snapshot_id: str
    bundle_seq: int
    row_count: int


@dataclass(frozen=True, slots=True)
class _SwapOptions:
    """How :func:`_swap` treats source and outbox (§8.1.1)."""

    new_source_id: str = ""
    preserve_outbox: bool = False
    #: Re-apply and keep the dirty rows over the snapshot (module docstring, "Carried dirty
    #: rows"): a lost seed's (``lease`` module), a rotation's, a pruned replay's.
    preserve_dirty: bool = False
    #: Compare the outbox with the snapshot first (:func:`_settled_outbox_rows`): settled rows
    #: leave a preserved outbox, and carried edits of their keys are based on the snapshot.
    settle_outbox: bool = False
    clear_source_recovery: bool = False
    advance_source_bundle_floor: int = 0


async def _report(progress: ProgressCallback | None, done: int, total: int) -> None:
    if progress is None:
        return
    outcome = progress(done, total)
    if inspect.isawaitable(outcome):
        await outcome


# --------------------------------------------------------------------------- download


def _validate_session(session: SnapshotSession) -> _Session:
    problem = ""
    if not session.snapshot_id:
        problem = "missing snapshot_id"
    elif session.snapshot_bundle_seq < 0 or session.row_count < 0 or session.byte_count < 0:
        problem = "negative snapshot_bundle_seq, row_count or byte_count"
    elif session.row_count > 0 and session.snapshot_bundle_seq <= 0:
        problem = "snapshot with rows is missing snapshot_bundle_seq"
    elif not session.expires_at:
        problem = "missing expires_at"
    if problem:
        raise ProtocolViolationError("snapshot_session_create", problem)
    return _Session(session.snapshot_id, session.snapshot_bundle_seq, session.row_count)


def _validate_chunk(session: _Session, chunk: SnapshotChunkResponse, after: int) -> None:
    problem = ""
    if chunk.snapshot_id != session.snapshot_id:
        problem = f"chunk of snapshot {chunk.snapshot_id!r}, expected {session.snapshot_id!r}"
    elif chunk.snapshot_bundle_seq != session.bundle_seq:
        problem = "chunk snapshot_bundle_seq differs from the session's"
    elif chunk.rows and chunk.snapshot_bundle_seq <= 0:
        problem = "chunk with rows is missing snapshot_bundle_seq"
    elif chunk.next_row_ordinal != after + len(chunk.rows):
        problem = f"next_row_ordinal {chunk.next_row_ordinal} != {after} + {len(chunk.rows)}"
    elif chunk.has_more and not chunk.rows:
        problem = "has_more without rows"
    else:
        for row in chunk.rows:
            if not (row.schema and row.table and row.key and row.row_version > 0 and row.payload):
                problem = f"invalid snapshot row for table {row.table!r}"
                break
    if problem:
        raise ProtocolViolationError("snapshot_chunk_fetch", problem)


def _table(runtime: ClientRuntime, schema: str, table: str, operation: str) -> TableInfo:
    if schema != runtime.schema:
        raise ProtocolViolationError(
            operation, f"row of schema {schema!r} does not belong to {runtime.schema!r}"
        )
    try:
        return runtime.managed.table(table)
    except KeyError:
        raise ProtocolViolationError(
            operation, f"table {table} is not configured for sync"
        ) from None


async def _create_session(
    runtime: ClientRuntime, replacement: SnapshotSourceReplacement | None
) -> _Session:
    try:
        session = await runtime.transport.create_snapshot_session(replacement)
    except SourceRetiredError as exc:
        if replacement is None:
            raise
        raise SourceReplacementDivergedError(
            replacement.new_source_id, exc.replaced_by_source_id
        ) from exc
    return _validate_session(session)


async def _download(
    runtime: ClientRuntime, session: _Session, progress: ProgressCallback | None
) -> None:
    """Page every chunk of ``session`` into the (already empty) stage."""
    after = 0
    limit = runtime.config.snapshot_chunk_rows
    await _report(progress, 0, session.row_count)
    while True:
        chunk = await runtime.transport.snapshot_chunk(session.snapshot_id, after, limit)
        _validate_chunk(session, chunk, after)
        staged = []
        # Table lookup and key codec once per (schema, table) of the chunk, not per row.
        codecs: dict[tuple[str, str], tuple[str, Callable[[Mapping[str, Any]], tuple[str, str]]]]
        codecs = {}
        for position, row in enumerate(chunk.rows, start=after + 1):
            codec = codecs.get((row.schema, row.table))
            if codec is None:
                info = _table(runtime, row.schema, row.table, "snapshot_chunk_fetch")
                codec = codecs[(row.schema, row.table)] = (info.name, wire_key_codec(info))
            _local_pk, key_json = codec[1](row.key)
            staged.append((
                session.snapshot_id, position, runtime.schema, codec[0],
                key_json, row.row_version, bytes(row.payload).decode(),
            ))
        if staged:
            async with runtime.transaction() as conn:
                await conn.exec_driver_sql(
                    "INSERT INTO _sync_snapshot_stage (snapshot_id, row_ordinal, schema_name,"
                    " table_name, key_json, row_version, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    staged,
                )
        after = chunk.next_row_ordinal
        crash_point("client.snapshot.chunk_staged")
        await _report(progress, after, session.row_count)
        if not chunk.has_more:
            return


async def _clear_stage(runtime: ClientRuntime) -> None:
    async with runtime.transaction() as conn:
        await conn.exec_driver_sql("DELETE FROM _sync_snapshot_stage")


# --------------------------------------------------------------------------- swap


async def _apply_stage(
    runtime: ClientRuntime, conn: AsyncConnection, session: _Session
) -> int:
    """Upsert the staged rows in batches (grouped per table for ``executemany``)."""
    applied = 0
    after = 0
    # Per staged table name: its TableInfo and payload decoder, looked up once per swap.
    tables: dict[
        object,
        tuple[
            TableInfo,
            Callable[[str], str],
            Callable[[WirePayload, str | None], tuple[SqlValue, ...]],
        ],
    ] = {}
    while True:
        rows = await fetch_all(
            conn,
            "SELECT row_ordinal, table_name, key_json, row_version, payload"
            " FROM _sync_snapshot_stage WHERE snapshot_id = ? AND row_ordinal > ?"
            " ORDER BY row_ordinal LIMIT ?",
            (session.snapshot_id, after, _APPLY_BATCH),
        )
        if not rows:
            return applied
        values: dict[str, list[tuple[object, ...]]] = defaultdict(list)
        states: list[tuple[object, ...]] = []
        for _ordinal, table, key_json, row_version, payload in rows:
            entry = tables.get(table)
            if entry is None:
                info = runtime.managed.table(str(table))
                entry = tables[table] = (
                    info, key_json_decoder(info), wire_payload_decoder(info)
                )
            info, decode_key, decode = entry
            local_pk = decode_key(str(key_json))
            values[info.name].append(decode(str(payload), local_pk))
            states.append((runtime.schema, info.name, key_json, row_version, 0))
        for table, params in values.items():
            await conn.exec_driver_sql(upsert_sql(runtime.managed.table(table)), params)
        await conn.exec_driver_sql(_UPSERT_ROW_STATE, states)
        applied += len(rows)
        after = int(rows[-1][0])


async def _reapply_outbox(runtime: ClientRuntime, conn: AsyncConnection) -> None:
    """Re-apply the preserved outbox's local intents over the snapshot (§8.1.1 step 6).

    Local payloads are converted to wire form first (§12.25: Go feeds local hex to the wire
    decoder and corrupts BLOBs).
    """
    for table, key_json, op, local_payload in await fetch_all(
        conn,
        "SELECT table_name, key_json, op, local_payload FROM _sync_outbox_rows"
        " ORDER BY row_ordinal",
    ):
        info = runtime.managed.table(str(table))
        local_pk = local_pk_from_key_json(info, str(key_json))
        if op == "DELETE" or local_payload is None:
            await conn.exec_driver_sql(delete_sql(info), (local_pk_to_sql(info, local_pk),))
        else:
            wire = local_payload_to_wire(info, str(local_payload), key=local_pk)
            await conn.exec_driver_sql(
                upsert_sql(info), wire_payload_to_values(info, wire, key=local_pk)
            )


async def _settled_outbox_rows(
    conn: AsyncConnection, session: _Session, bundle: OutboxBundle
) -> list[OutboxRow]:
    """The frozen rows whose intent this snapshot already shows.

    That is the same after-image as the server stores it (compared like the
    ``already_committed`` proof, which tolerates the server's normalisation), or no row for a
    DELETE - or, for a bundle the server confirmed (``committed_remote``), a row whose version
    is that bundle's. Such a row has nothing left to say: the server holds exactly what it
    asked for, typically because the bundle *was* committed - a lost commit reply before
    ``history_pruned`` on push create, or §8.5's committed bundle whose rows were pruned before
    the replay. Reads the stage and the outbox, so it runs before the managed tables are
    cleared.
    """
    ours = bundle.remote_bundle_seq if bundle.state is OutboxState.COMMITTED_REMOTE else 0
    # One pass over the stage; SQLite indexes the (small) outbox side of the join itself.
    staged = {
        (str(t), str(k)): (str(p), int(v))
        for t, k, p, v in await fetch_all(
            conn,
            "SELECT s.table_name, s.key_json, s.payload, s.row_version"
            " FROM _sync_snapshot_stage AS s JOIN _sync_outbox_rows AS o"
            " ON o.schema_name = s.schema_name AND o.table_name = s.table_name"
            " AND o.key_json = s.key_json WHERE s.snapshot_id = ?",
            (session.snapshot_id,),
        )
    }
    settled = []
    for row in bundle.rows:
        server = staged.get((row.table, row.key_json))
        if row.wire_payload is None:
            done = server is None
        else:
            done = server is not None and (
                server[1] == ours or stored_as(row.wire_payload, server[0])
            )
        if done:
            settled.append(row)
    return settled


async def _rebase_settled(
    runtime: ClientRuntime, conn: AsyncConnection, settled: list[OutboxRow]
) -> None:
    """Base the carried dirty rows of settled outbox keys on the snapshot's version of the row.

    Such an edit was made on top of the frozen intent, which the snapshot shows is the server's
    current row: pushing it on the snapshot's version is what the replay of that bundle would
    have done (§5.5 rebase). Left on its captured base (older than our own write), it would
    conflict with our own bundle, and a server-wins resolver would discard the edit. A settled
    DELETE has no snapshot row, so an edit re-inserting the key keeps its captured base: a
    snapshot carries no tombstone versions, and the resolver decides that conflict.
    """
    await conn.exec_driver_sql(
        "UPDATE _sync_dirty_rows SET base_row_version = (SELECT r.row_version"
        " FROM _sync_row_state AS r WHERE r.schema_name = _sync_dirty_rows.schema_name"
        " AND r.table_name = _sync_dirty_rows.table_name"
        " AND r.key_json = _sync_dirty_rows.key_json)"
        " WHERE schema_name = ? AND table_name = ? AND key_json = ?"
        " AND EXISTS (SELECT 1 FROM _sync_row_state AS r"
        " WHERE r.schema_name = _sync_dirty_rows.schema_name"
        " AND r.table_name = _sync_dirty_rows.table_name"
        " AND r.key_json = _sync_dirty_rows.key_json AND r.deleted = 0)",
        [(runtime.schema, r.table, r.key_json) for r in settled],
    )


async def _retarget_source(
    runtime: ClientRuntime, conn: AsyncConnection, new_source_id: str
) -> None:
    await ensure_source(conn, new_source_id)
    rows = await fetch_all(
        conn,
        "SELECT next_source_bundle_id, replaced_by_source_id FROM _sync_source_state"
        " WHERE source_id = ?",
        (new_source_id,),
    )
    if int(rows[0][0]) != 1 or rows[0][1]:
        raise OversyncError(
            f"rotated rebuild requires a fresh source id; {new_source_id} is already in use"
        )
    await conn.exec_driver_sql(
        "UPDATE _sync_source_state SET replaced_by_source_id = ? WHERE source_id = ?",
        (new_source_id, runtime.source_id),
    )


async def _retarget_outbox(conn: AsyncConnection, target: str) -> None:
    (state,) = await fetch_all(
        conn, "SELECT state FROM _sync_outbox_bundle WHERE singleton_key = 1"
    )
    if state[0] == "none" and not await count_outbox_rows(conn):
        return  # nothing frozen, nothing to re-address
    if state[0] != "prepared":
        raise OversyncError(
            "cannot preserve outbox during source recovery when outbox state is"
            f" {str(state[0])!r}"
        )
    await conn.exec_driver_sql("UPDATE _sync_outbox_rows SET source_bundle_id = 1")
    await conn.exec_driver_sql(
        "UPDATE _sync_outbox_bundle SET source_id = ?, source_bundle_id = 1,"
        " remote_bundle_hash = '', remote_bundle_seq = 0 WHERE singleton_key = 1",
        (target,),
    )


async def _swap(
    runtime: ClientRuntime, conn: AsyncConnection, session: _Session, options: _SwapOptions
) -> None:
    """§8.1.1 inside ``conn``'s transaction; the caller commits (or rolls back on error)."""
    await conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    attachment = await load_attachment(conn)
    if not (attachment.attached and attachment.attached_user_id):
        raise AttachRequiredError("Rebuild()")
    await set_apply_mode(conn, True)
    carried = await take_dirty_rows(conn) if options.preserve_dirty else []
    bundle = await load_outbox(conn) if options.settle_outbox else None
    settled = [] if bundle is None else await _settled_outbox_rows(conn, session, bundle)
    await clear_managed_tables(
        conn, runtime.schema, (t.name for t in runtime.managed.tables),
        preserve_outbox=options.preserve_outbox,
    )
    applied = await _apply_stage(runtime, conn, session)
    crash_point("client.snapshot.swap_applied")
    if applied != session.row_count:
        raise ProtocolViolationError(
            "snapshot_apply", f"applied {applied} staged rows, snapshot has {session.row_count}"
        )
    if options.preserve_outbox:
        if bundle is not None and settled:
            # Re-pushed verbatim, a settled row would only conflict with our own write.
            kept = await drop_outbox_rows(conn, bundle, {r.row_ordinal for r in settled})
            _log.info("%d outbox rows are already in the snapshot; %d remain to push",
                      len(settled), kept)
        await _reapply_outbox(runtime, conn)
    await restore_dirty_rows(conn, runtime.managed, carried)
    if carried and settled:
        await _rebase_settled(runtime, conn, settled)
    target = runtime.source_id
    if options.new_source_id:
        await _retarget_source(runtime, conn, options.new_source_id)
        target = options.new_source_id
    await save_attachment(
        conn,
        replace(attachment, current_source_id=target, last_bundle_seq_seen=session.bundle_seq,
                rebuild_required=False),
    )
    if options.preserve_outbox:
        await _retarget_outbox(conn, target)
    if options.advance_source_bundle_floor > 0:
        await conn.exec_driver_sql(
            "UPDATE _sync_source_state SET next_source_bundle_id ="
            " MAX(next_source_bundle_id, ?) WHERE source_id = ?",
            (options.advance_source_bundle_floor, target),
        )
    if options.clear_source_recovery:
        await save_operation(conn, OperationState())
    await conn.exec_driver_sql(
        "DELETE FROM _sync_snapshot_stage WHERE snapshot_id = ?", (session.snapshot_id,)
    )
    await set_apply_mode(conn, False)


# --------------------------------------------------------------------------- engine


async def _rebuild_from_snapshot(
    runtime: ClientRuntime,
    options: _SwapOptions,
    progress: ProgressCallback | None,
    reason: str = "",
) -> RestoreSummary:
    """§8.1: mark rebuild required, download a fresh snapshot, swap it in."""
    async with runtime.transaction() as conn:
        attachment = await load_attachment(conn)
        if not attachment.attached_to(runtime.user_id):
            raise AttachRequiredError("Rebuild()")
        await set_rebuild_required(conn, True)
        await conn.exec_driver_sql("DELETE FROM _sync_snapshot_stage")
    replacement = None
    if options.new_source_id:
        replacement = SnapshotSourceReplacement(
            previous_source_id=runtime.source_id,
            new_source_id=options.new_source_id,
            reason=SourceReplacementReason(reason),
        )
    try:
        session = await _create_session(runtime, replacement)
    except SourceReplacementDivergedError as diverged:
        # Another install sharing our source (a clone) already retired it in favour of its own
        # replacement, and the server accepts no other rotation of it (SERVER.md §7.2), so a
        # retry would diverge forever. Our reserved id was never sent anywhere else: the server
        # treats it like a new install's, whose first push activates it. Keep-source snapshots
        # stay allowed for the retired source.
        _log.warning("%s; continuing as reserved source %s without a server-side rotation",
                     diverged, options.new_source_id)
        session = await _create_session(runtime, None)
    try:
        await _download(runtime, session, progress)
        try:
            async with runtime.transaction() as conn:
                await _swap(runtime, conn, session, options)
        except IntegrityError as exc:
            if not options.preserve_dirty:
                raise
            await _swap_without_edits(runtime, session, options, exc)
    finally:
        await runtime.transport.delete_snapshot_session(session.snapshot_id)
    if options.new_source_id:
        runtime.source_id = options.new_source_id
    await _report(progress, session.row_count, session.row_count)
    runtime.counters.rebuilds += 1
    _log.info(
        "rebuilt from snapshot at bundle %d (%d rows)", session.bundle_seq, session.row_count,
        extra={"user": runtime.user_id, "source_id": runtime.source_id,
               "bundle_seq": session.bundle_seq, "rows": session.row_count},
    )
    return RestoreSummary(bundle_seq=session.bundle_seq, row_count=session.row_count)


#: Rounds of "find the carried edits that break a foreign key, swap without them" before the
#: swap gives up on every carried edit (each round removes at least one offender).
_OFFENDER_ROUNDS: Final = 3


class _Probe(Exception):
    """Internal: rolls back the probing swap once its foreign-key violations are read."""


async def _swap_without_edits(
    runtime: ClientRuntime, session: _Session, options: _SwapOptions, error: IntegrityError
) -> None:
    """Some carried edits break a local constraint next to the server's rows: swap without them.

    E.g. a post written offline under a user another device has deleted since. Such an edit
    could never be pushed either, and keeping the swap failing would leave source recovery (or
    ``rebuild_required``) with pending rows that no operation accepts - the dead end the carry
    exists to avoid. The swap is tried in a transaction that is rolled back, SQLite names the
    rows that break a foreign key, and the carried edits behind them (the child's own edit, or
    the deletion of its parent) are left out; the other edits are kept. Only if that does not
    settle it is the swap redone without any carried edit (Go's behaviour, where a pruned
    replay always discards them). Each discarded edit is logged. The failed swaps rolled back,
    so the stage and the dirty rows are as before them.
    """
    excluded: list[tuple[str, str, str]] = []
    for _ in range(_OFFENDER_ROUNDS):
        found = await _offending_edits(runtime, session, options, excluded)
        fresh = [edit for edit in found if edit not in excluded]
        if not fresh:
            break
        excluded.extend(fresh)
        try:
            async with runtime.transaction() as conn:
                await _drop_dirty(runtime, conn, excluded)
                await _swap(runtime, conn, session, options)
        except IntegrityError as again:
            error = again
            continue
        _log_discarded(runtime, excluded, error)
        return
    async with runtime.transaction() as conn:
        every = [
            (str(t), str(k), str(o)) for t, k, o in await fetch_all(
                conn, "SELECT table_name, key_json, op FROM _sync_dirty_rows"
                " ORDER BY dirty_ordinal",
            )
        ]
        await _swap(runtime, conn, session, replace(options, preserve_dirty=False))
    _log_discarded(runtime, every, error)


def _log_discarded(
    runtime: ClientRuntime, dropped: list[tuple[str, str, str]], error: IntegrityError
) -> None:
    for table, key_json, op in dropped:
        _log.warning("discarded pending %s of %s %s: it does not fit next to the server's rows",
                     op, table, key_json, extra={"user": runtime.user_id})
    _log.warning("snapshot applied without %d pending edits (%s)", len(dropped), error.orig,
                 extra={"user": runtime.user_id, "rows": len(dropped)})


async def _drop_dirty(
    runtime: ClientRuntime, conn: AsyncConnection, edits: list[tuple[str, str, str]]
) -> None:
    await conn.exec_driver_sql(
        "DELETE FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ? AND key_json = ?",
        [(runtime.schema, table, key_json) for table, key_json, _ in edits],
    )


async def _offending_edits(
    runtime: ClientRuntime, session: _Session, options: _SwapOptions,
    excluded: list[tuple[str, str, str]],
) -> list[tuple[str, str, str]]:
    """The carried edits behind the foreign-key violations of a swap without ``excluded``,
    found by trying it."""
    found: list[tuple[str, str, str]] = []
    try:
        async with runtime.transaction() as conn:
            if excluded:
                await _drop_dirty(runtime, conn, excluded)
            carried = {
                (str(t), str(k)): str(o) for t, k, o in await fetch_all(
                    conn, "SELECT table_name, key_json, op FROM _sync_dirty_rows"
                )
            }
            await _swap(runtime, conn, session, options)
            for table, rowid, parent, fkid in await fetch_all(conn, "PRAGMA foreign_key_check"):
                edit = await _edit_behind(
                    runtime, conn, carried, str(table), rowid, str(parent), int(fkid)
                )
                if edit is not None and edit not in found:
                    found.append(edit)
            raise _Probe
    except _Probe:
        pass
    return found


async def _edit_behind(
    runtime: ClientRuntime, conn: AsyncConnection, carried: Mapping[tuple[str, str], str],
    table: str, rowid: Any, parent: str, fkid: int,
) -> tuple[str, str, str] | None:
    """The carried edit that made row ``rowid`` of ``table`` break foreign key ``fkid``."""
    managed = runtime.managed
    try:
        child = managed.table(table)
    except KeyError:
        return None
    if rowid is None:  # a WITHOUT ROWID table: the row cannot be addressed, give up
        return None
    quoted = quote_identifier(child.name)
    rows = await fetch_all(
        conn, f"SELECT {key_json_sql(child, quoted)} FROM {quoted} WHERE rowid = ?", (rowid,)
    )
    if rows and (child.name, str(rows[0][0])) in carried:
        key = str(rows[0][0])
        return child.name, key, carried[(child.name, key)]
    # A server row the snapshot brought is left without its parent: a carried deletion (or
    # re-keying) of that parent is to blame.
    columns = [
        (str(r[3]), r[4]) for r in await fetch_all(
            conn, f"PRAGMA foreign_key_list({quoted})"
        ) if int(r[0]) == fkid
    ]
    try:
        parent_info = managed.table(parent)
    except KeyError:
        return None
    if len(columns) != 1 or (columns[0][1] or parent_info.key_column) != parent_info.key_column:
        return None
    values = await fetch_all(
        conn, f"SELECT {quote_identifier(columns[0][0])} FROM {quoted} WHERE rowid = ?", (rowid,)
    )
    if not values:
        return None
    for (table_name, key_json), op in carried.items():
        if table_name.lower() != parent_info.name.lower() or op != "DELETE":
            continue
        pk = local_pk_to_sql(parent_info, local_pk_from_key_json(parent_info, key_json))
        if pk == values[0][0]:
            return table_name, key_json, op
    return None


async def _snapshot_report(runtime: ClientRuntime, restore: RestoreSummary) -> RemoteSyncReport:
    async with runtime.transaction() as conn:
        status = await read_sync_status(conn, runtime.counters)
    return RemoteSyncReport(RemoteSyncOutcome.APPLIED_SNAPSHOT, status, restore)


async def rebuild_keep_source(
    runtime: ClientRuntime, progress: ProgressCallback | None = None
) -> RemoteSyncReport:
    """Keep-source rebuild without precondition checks (the caller has done them).

    The caller found no dirty rows, but the application may write while the chunks download
    (only ``remote_replace`` and source recovery guard the tables); those rows are carried
    over the snapshot like a rotated rebuild's, or the swap's clear would delete them.
    """
    restore = await _rebuild_from_snapshot(runtime, _SwapOptions(preserve_dirty=True), progress)
    return await _snapshot_report(runtime, restore)


async def rebuild(
    runtime: ClientRuntime, progress: ProgressCallback | None = None
) -> RemoteSyncReport:
    """The public ``Rebuild`` (§8.2/§8.3); rotates the source while source recovery is active."""
    async with runtime.transaction() as conn:
        await ensure_connected(runtime, conn, "Rebuild()")
        operation = await load_operation(conn)
        if operation.kind is OperationKind.SOURCE_RECOVERY:
            # Dirty rows are carried through the rotation (module docstring, "Carried dirty
            # rows"): Go refuses them here while push, pull and app writes are refused too,
            # which leaves no way out of recovery (CLIENT.md §12.42).
            new_source = operation.replacement_source_id
            if not new_source:
                # Persist the reservation so a failed rotation retries with the same id.
                new_source = await fresh_source_id(conn, avoid=(runtime.source_id,))
                await ensure_source(conn, new_source)
                await save_operation(conn, replace(operation, replacement_source_id=new_source))
        else:
            dirty = await count_dirty_rows(conn)
            if dirty:
                raise DirtyStateRejectedError(dirty)
            outbound = await count_outbox_rows(conn)
            if outbound:
                raise PendingPushReplayError(outbound)
            if operation.kind is not OperationKind.NONE:
                raise OversyncError(
                    f"cannot rebuild while lifecycle operation {operation.kind.value} is pending"
                )
    if runtime.downloads_paused:
        async with runtime.transaction() as conn:
            status = await read_sync_status(conn, runtime.counters)
        return RemoteSyncReport(RemoteSyncOutcome.SKIPPED_PAUSED, status)
    if operation.kind is not OperationKind.SOURCE_RECOVERY:
        return await rebuild_keep_source(runtime, progress)
    options = _SwapOptions(
        new_source_id=new_source, preserve_outbox=True, preserve_dirty=True,
        settle_outbox=True, clear_source_recovery=True,
    )
    restore = await _rebuild_from_snapshot(runtime, options, progress, reason=operation.reason)
    return await _snapshot_report(runtime, restore)


async def rebuild_after_pruned_replay(
    runtime: ClientRuntime, source_bundle_id: int
) -> RestoreSummary:
    """§8.5: our bundle is committed but its rows are pruned; take a snapshot instead.

    Keeps the source, drops the outbox (the snapshot contains the bundle) and lifts the
    source's next bundle id to at least ``source_bundle_id + 1``. For the push module.
    """
    return await _rebuild_from_snapshot(
        runtime,
        _SwapOptions(advance_source_bundle_floor=source_bundle_id + 1, preserve_dirty=True,
                     settle_outbox=True),
        None,
    )


async def finalize_remote_replace(
    runtime: ClientRuntime,
    operation: OperationState,
    progress: ProgressCallback | None = None,
) -> RestoreSummary:
    """§8.4: stage the server snapshot (reusing a complete stage offline) and swap it in.

    ``runtime.user_id`` must already be the target user. Leaves the operation as
    ``remote_replace``; the attach caller resets it when it persists the connected state.
    """
    session = await _reuse_stage(runtime, operation)
    if session is None:
        session = await _create_session(runtime, None)
        try:
            async with runtime.transaction() as conn:
                await conn.exec_driver_sql("DELETE FROM _sync_snapshot_stage")
                await save_operation(
                    conn,
                    replace(operation, staged_snapshot_id=session.snapshot_id,
                            snapshot_bundle_seq=session.bundle_seq,
                            snapshot_row_count=session.row_count),
                )
            await _download(runtime, session, progress)
        finally:
            await runtime.transport.delete_snapshot_session(session.snapshot_id)
    preserve = False
    try:
        async with runtime.transaction() as conn:
            await ensure_source(conn, runtime.source_id)
            attachment = await load_attachment(conn)
            # The rows of this user's lost seed are kept as pending changes (§12.29, ``lease``).
            preserve = attachment.lost_seed_user_id == operation.target_user_id != ""
            await save_attachment(
                conn,
                replace(attachment, current_source_id=runtime.source_id,
                        binding_state=BindingState.ATTACHED,
                        attached_user_id=operation.target_user_id,
                        schema_name=runtime.schema, last_bundle_seq_seen=0,
                        rebuild_required=False, pending_initialization_id=""),
            )
            await save_operation(conn, operation.without_stage())
            await _swap(runtime, conn, session, _SwapOptions(preserve_dirty=preserve))
    except IntegrityError as exc:
        if not preserve:
            raise
        await _abandon_remote_replace(runtime, operation, exc)
    await _report(progress, session.row_count, session.row_count)
    return RestoreSummary(bundle_seq=session.bundle_seq, row_count=session.row_count)


async def _abandon_remote_replace(
    runtime: ClientRuntime, operation: OperationState, error: IntegrityError
) -> NoReturn:
    """A lost seed's rows broke a local constraint next to the server's rows: stop the replace.

    The swap was rolled back (rows, dirty rows, anonymous binding all unchanged). Retrying it
    cannot succeed until the rows change, and a pending ``remote_replace`` makes the capture
    guards refuse every application write, so the operation is dropped: the database is as
    before the attach, writable, and the next attach of the same user tries again.
    """
    async with runtime.transaction() as conn:
        await conn.exec_driver_sql("DELETE FROM _sync_snapshot_stage")
        await save_operation(conn, OperationState())
    _log.warning(
        "remote replace for %s abandoned: unsent rows of its lost seed conflict with the"
        " server's rows (%s)", operation.target_user_id, error.orig,
        extra={"user": operation.target_user_id},
    )
    raise AttachLocalStateConflictError(
        f"the unsent rows of user {operation.target_user_id!r} do not fit next to the server's"
        f" rows ({error.orig}); change or delete the conflicting local rows and attach again"
    ) from error


async def _reuse_stage(runtime: ClientRuntime, operation: OperationState) -> _Session | None:
    """The recorded stage when it is complete; otherwise clear any recorded stage."""
    if not operation.staged_snapshot_id:
        return None
    async with runtime.transaction() as conn:
        (count,) = await fetch_all(
            conn,
            "SELECT COUNT(*) FROM _sync_snapshot_stage WHERE snapshot_id = ?",
            (operation.staged_snapshot_id,),
        )
        if int(count[0]) == operation.snapshot_row_count:
            _log.info("resuming remote replace from stage %s", operation.staged_snapshot_id)
            return _Session(
                operation.staged_snapshot_id,
                operation.snapshot_bundle_seq,
                operation.snapshot_row_count,
            )
        await conn.exec_driver_sql("DELETE FROM _sync_snapshot_stage")
        await save_operation(conn, operation.without_stage())
    return None
