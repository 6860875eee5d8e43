"""Client lifecycle: open, attach, detach, status reads and uninstall (CLIENT.md §4).

Each function is one public operation *without* the operation lock; the
:class:`~oversync_sa.client.client.SyncClient` facade takes the lock around it. Durable changes
of one step happen in one SQLite transaction, so a failure (including a network failure between
steps) leaves the previous durable state in place.

Deliberate differences from the Go client (CLIENT.md §12):

* §12.27: ``detach()`` and every ``initialize_*`` attach reset ``last_bundle_seq_seen`` to 0.
  Bundle sequences are per user on the server, so a checkpoint inherited from another user
  would make the first pull fail validation or silently skip the new user's early bundles.
* §12.41: Open's anonymous capture serialises rows with the triggers' own ``json_object``
  expressions, so captured payloads are byte-identical to trigger captures.
* §12.43: Detach defers foreign keys before clearing tables.
* §12.29: connect reports outbox rows as pending too, and the unsent rows of a lost
  initialization lease stay with that lease's user (``lease`` module): attaching them carries
  the rows over the remote replace, attaching another user is refused, detach is blocked.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa._crashpoints import crash_point
from oversync_sa.client.encoding import key_json_sql, payload_json_sql, quote_identifier
from oversync_sa.client.errors import (
    AttachBindingConflictError,
    AttachLifecycleUnsupportedError,
    AttachLocalStateConflictError,
    OpenRequiredError,
    ProtocolViolationError,
)
from oversync_sa.client.local_schema import METADATA_TABLES, SYNC_TIMESTAMP_SQL, fetch_all
from oversync_sa.client.results import (
    AttachOutcome,
    AttachResult,
    AttachStatus,
    DetachOutcome,
    DetachResult,
    PendingSyncStatus,
    RestoreSummary,
    SourceInfo,
    SourceRecoveryCode,
    SyncStatus,
)
from oversync_sa.client.runtime import OWNERSHIP, ClientRuntime
from oversync_sa.client.snapshot import finalize_remote_replace
from oversync_sa.client.state import (
    AttachmentState,
    BindingState,
    OperationKind,
    OperationState,
    clear_managed_tables,
    count_dirty_rows,
    count_outbox_rows,
    ensure_connected,
    ensure_source,
    fresh_source_id,
    load_attachment,
    load_operation,
    managed_table_names,
    read_pending_status,
    read_sync_status,
    save_attachment,
    save_operation,
)
from oversync_sa.client.transport import http_status_of
from oversync_sa.client.triggers import drop_triggers, set_apply_mode
from oversync_sa.errors import OversyncError
from oversync_sa.wire import ConnectResolution, ConnectResponse

__all__ = [
    "attach",
    "detach",
    "last_bundle_seq_seen",
    "open_client",
    "pending_sync_status",
    "source_info",
    "sync_status",
    "uninstall_sync",
]

_log = logging.getLogger("oversync_sa.client.lifecycle")

#: Statuses meaning "this server has no such endpoint" (§4.4 steps 7 and 9).
_UNSUPPORTED_STATUSES: Final = frozenset({404, 405, 501})

# Requeue (§5.8): overwrite intent and base, keep the first capture ordinal.
_REQUEUE_SQL: Final = (
    "INSERT INTO _sync_dirty_rows (schema_name, table_name, key_json, op, base_row_version,"
    " payload, dirty_ordinal, updated_at) VALUES (?, ?, ?, ?, ?, ?,"
    " COALESCE((SELECT dirty_ordinal FROM _sync_dirty_rows WHERE schema_name = ?"
    " AND table_name = ? AND key_json = ?),"
    " (SELECT COALESCE(MAX(dirty_ordinal), 0) + 1 FROM _sync_dirty_rows)),"
    f" {SYNC_TIMESTAMP_SQL})"
    " ON CONFLICT (schema_name, table_name, key_json) DO UPDATE SET op = excluded.op,"
    " base_row_version = excluded.base_row_version, payload = excluded.payload,"
    " updated_at = excluded.updated_at"
)


# --------------------------------------------------------------------------- open


async def _open_transaction(runtime: ClientRuntime, conn: AsyncConnection) -> AttachmentState:
    """§4.3 steps 1-6 inside ``conn``'s transaction; returns the persisted attachment."""
    attachment = await load_attachment(conn)
    first_open = not attachment.current_source_id
    if first_open:
        source_id = await fresh_source_id(conn)
        attachment = replace(attachment, current_source_id=source_id)
    if not attachment.schema_name:
        attachment = replace(attachment, schema_name=runtime.schema)
    if first_open and not attachment.attached:
        await _capture_existing_rows(runtime, conn)
    await ensure_source(conn, attachment.current_source_id)
    await save_attachment(conn, attachment)
    await set_apply_mode(conn, False)
    return attachment


async def _capture_existing_rows(runtime: ClientRuntime, conn: AsyncConnection) -> None:
    """Requeue rows that existed before the triggers, as INSERT intents with base 0 (§4.3.4)."""
    for info in runtime.managed.tables:
        if info.download_only:
            continue
        table = quote_identifier(info.name)
        rows = await fetch_all(
            conn,
            f"SELECT {key_json_sql(info, table)}, {payload_json_sql(info, table)} FROM {table}"
            f" ORDER BY {quote_identifier(info.key_column)}",
        )
        if not rows:
            continue
        _log.info("capturing %d pre-existing rows of %s as pending inserts", len(rows), info.name)
        await conn.exec_driver_sql(
            _REQUEUE_SQL,
            [
                (runtime.schema, info.name, key, "INSERT", 0, payload,
                 runtime.schema, info.name, key)
                for key, payload in rows
            ],
        )


async def open_client(runtime: ClientRuntime) -> None:
    """``Open``: ensure the managed source identity and load the in-memory session (§4.3).

    Idempotent; the session is *not* connected afterwards, even for an attached database.
    """
    async with runtime.transaction() as conn:
        attachment = await _open_transaction(runtime, conn)
    runtime.source_id = attachment.current_source_id
    runtime.user_id = attachment.attached_user_id if attachment.attached else ""
    runtime.pending_initialization_id = attachment.pending_initialization_id
    runtime.session_connected = False


# --------------------------------------------------------------------------- attach


async def _persist_connected(
    runtime: ClientRuntime, conn: AsyncConnection, user_id: str, initialization_id: str,
    *, reset_checkpoint: bool,
) -> None:
    attachment = await load_attachment(conn)
    await ensure_source(conn, runtime.source_id)
    await save_attachment(
        conn,
        replace(
            attachment,
            current_source_id=runtime.source_id,
            binding_state=BindingState.ATTACHED,
            attached_user_id=user_id,
            pending_initialization_id=initialization_id,
            schema_name=attachment.schema_name or runtime.schema,
            last_bundle_seq_seen=0 if reset_checkpoint else attachment.last_bundle_seq_seen,
        ),
    )
    await save_operation(conn, OperationState())


def _connected(runtime: ClientRuntime, user_id: str, initialization_id: str) -> None:
    runtime.user_id = user_id
    runtime.pending_initialization_id = initialization_id
    runtime.session_connected = True


async def _status(runtime: ClientRuntime) -> SyncStatus:
    async with runtime.transaction() as conn:
        return await read_sync_status(conn, runtime.counters)


async def _check_capabilities(runtime: ClientRuntime) -> None:
    try:
        capabilities = await runtime.transport.capabilities()
    except ProtocolViolationError as exc:
        raise AttachLifecycleUnsupportedError("invalid capabilities response") from exc
    except OversyncError as exc:
        if http_status_of(exc) in _UNSUPPORTED_STATUSES:
            raise AttachLifecycleUnsupportedError("missing /sync/capabilities endpoint") from exc
        raise
    if not capabilities.features.connect_lifecycle:
        raise AttachLifecycleUnsupportedError("connect_lifecycle capability is absent")


async def _connect(runtime: ClientRuntime, has_local_pending_rows: bool) -> ConnectResponse:
    try:
        return await runtime.transport.connect(has_local_pending_rows)
    except OversyncError as exc:
        if http_status_of(exc) in _UNSUPPORTED_STATUSES:
            raise AttachLifecycleUnsupportedError("missing /sync/connect endpoint") from exc
        raise


async def _ensure_compatible(runtime: ClientRuntime, user_id: str) -> None:
    """Durable state must not belong to another user or source before an initialize_*."""
    async with runtime.transaction() as conn:
        await ensure_source(conn, runtime.source_id)
        attachment = await load_attachment(conn)
    if attachment.attached and attachment.attached_user_id != user_id:
        raise AttachLocalStateConflictError(
            f"database is attached to user {attachment.attached_user_id!r}"
        )
    if attachment.current_source_id and attachment.current_source_id != runtime.source_id:
        raise AttachLocalStateConflictError(
            f"database is bound to source {attachment.current_source_id!r}"
        )


async def attach(runtime: ClientRuntime, user_id: str) -> AttachResult:
    """``Attach(user_id)`` (§4.4): resume offline, or connect and apply the server's resolution.

    ``initialize_local`` only records the lease id; the next push (push module) carries it as
    ``initialization_id`` and thereby uploads the local seed.
    """
    user_id = user_id.strip()
    if not user_id:
        raise ValueError("userID must be provided")
    if not runtime.source_id:
        raise OpenRequiredError("Attach(userID)")

    async with runtime.transaction() as conn:
        attachment = await _open_transaction(runtime, conn)
        operation = await load_operation(conn)
    runtime.source_id = attachment.current_source_id

    if operation.kind is OperationKind.REMOTE_REPLACE:
        if operation.target_user_id != user_id:
            raise AttachLocalStateConflictError(
                f'pending remote_replace belongs to scope "{operation.target_user_id}"'
                f' on source "{runtime.source_id}"'
            )
        return await _finish_remote_replace(runtime, user_id, operation)

    if attachment.attached_to(user_id) and attachment.current_source_id == runtime.source_id:
        _connected(runtime, user_id, attachment.pending_initialization_id)
        return AttachResult(
            status=AttachStatus.CONNECTED,
            outcome=AttachOutcome.RESUMED_ATTACHED_STATE,
            sync_status=await _status(runtime),
        )
    if attachment.attached and attachment.attached_user_id:
        raise AttachBindingConflictError(attachment.attached_user_id, user_id)
    await _refuse_lost_seed_of_another_user(runtime, attachment, user_id)

    await _check_capabilities(runtime)
    async with runtime.transaction() as conn:
        pending_rows = await _local_pending_rows(conn) > 0
    response = await _connect(runtime, pending_rows)
    crash_point("client.attach.connect_reply")
    return await _resolve(runtime, user_id, response)


async def _local_pending_rows(conn: AsyncConnection) -> int:
    """Rows the connect must report: dirty *and* frozen ones.

    Go counts only dirty rows (CLIENT.md §12.29), so a device whose rows sit in the outbox
    claims to be empty and, on an initialized scope, has them wiped by the remote replace.
    """
    return await count_dirty_rows(conn) + await count_outbox_rows(conn)


async def _refuse_lost_seed_of_another_user(
    runtime: ClientRuntime, attachment: AttachmentState, user_id: str
) -> None:
    """Unsent rows of a lost initialization lease belong to that lease's user (``lease``)."""
    owner = attachment.lost_seed_user_id
    if not owner or owner == user_id:
        return
    async with runtime.transaction() as conn:
        pending = await _local_pending_rows(conn)
    if pending:
        raise AttachLocalStateConflictError(
            f"{pending} unsynced rows of user {owner!r} are pending after its initialization"
            f" lease was lost; attach {owner!r} again to push them before attaching"
            f" {user_id!r}"
        )


async def _resolve(runtime: ClientRuntime, user_id: str, response: ConnectResponse) -> AttachResult:
    resolution = response.resolution
    if resolution is ConnectResolution.RETRY_LATER:
        runtime.session_connected = False
        return AttachResult(
            status=AttachStatus.RETRY_LATER, retry_after=float(response.retry_after_seconds)
        )
    if resolution in (ConnectResolution.INITIALIZE_EMPTY, ConnectResolution.INITIALIZE_LOCAL):
        await _ensure_compatible(runtime, user_id)
        initialization_id = (
            response.initialization_id
            if resolution is ConnectResolution.INITIALIZE_LOCAL
            else ""
        )
        async with runtime.transaction() as conn:
            await _persist_connected(runtime, conn, user_id, initialization_id,
                                     reset_checkpoint=True)
        _connected(runtime, user_id, initialization_id)
        outcome = (
            AttachOutcome.SEEDED_FROM_LOCAL
            if initialization_id
            else AttachOutcome.STARTED_EMPTY
        )
        return AttachResult(
            status=AttachStatus.CONNECTED, outcome=outcome, sync_status=await _status(runtime)
        )
    if resolution is ConnectResolution.REMOTE_AUTHORITATIVE:
        operation = OperationState(kind=OperationKind.REMOTE_REPLACE, target_user_id=user_id)
        async with runtime.transaction() as conn:
            attachment = await load_attachment(conn)
            # Keeping the lost seed's owner tells the replace to carry its rows over (§12.29).
            owner = user_id if attachment.lost_seed_user_id == user_id else ""
            await save_attachment(
                conn,
                replace(attachment, binding_state=BindingState.ANONYMOUS, attached_user_id=owner,
                      pending_initialization_id=""),
            )
            await save_operation(conn, operation)
        return await _finish_remote_replace(runtime, user_id, operation)
    raise ProtocolViolationError("connect_request", f"unexpected connect resolution {resolution!r}")


async def _finish_remote_replace(
    runtime: ClientRuntime, user_id: str, operation: OperationState
) -> AttachResult:
    runtime.user_id = user_id
    restore: RestoreSummary = await finalize_remote_replace(runtime, operation)
    async with runtime.transaction() as conn:
        await _persist_connected(runtime, conn, user_id, "", reset_checkpoint=False)
    _connected(runtime, user_id, "")
    return AttachResult(
        status=AttachStatus.CONNECTED,
        outcome=AttachOutcome.USED_REMOTE_STATE,
        sync_status=await _status(runtime),
        restore=restore,
    )


# --------------------------------------------------------------------------- detach


async def detach(runtime: ClientRuntime) -> DetachResult:
    """``Detach`` (§4.5): wipe the user's local rows unless unsynced data would be lost."""
    async with runtime.transaction() as conn:
        pending = await read_pending_status(conn)
        if pending.blocks_detach:
            return DetachResult(
                DetachOutcome.BLOCKED_UNSYNCED_DATA, pending_row_count=pending.pending_row_count
            )
        await set_apply_mode(conn, True)
        await clear_managed_tables(
            conn, runtime.schema, (t.name for t in runtime.managed.tables)
        )
        await conn.exec_driver_sql("DELETE FROM _sync_snapshot_stage")
        crash_point("client.detach.cleared")
        await set_apply_mode(conn, False)
        attachment = await load_attachment(conn)
        source_id = await _source_for_next_user(conn, attachment.current_source_id)
        await save_attachment(
            conn,
            replace(attachment, binding_state=BindingState.ANONYMOUS, attached_user_id="",
                  pending_initialization_id="", last_bundle_seq_seen=0,
                  current_source_id=source_id),
        )
        await save_operation(conn, OperationState())
    runtime.disconnect()
    runtime.source_id = source_id
    return DetachResult(DetachOutcome.DETACHED, 0)


async def _source_for_next_user(conn: AsyncConnection, source_id: str) -> str:
    """The source the next attached user will push from.

    The server sequences source bundles per ``(user, source)`` and expects 1 for a pair it has
    never seen, while the device keeps one counter per source. Reusing a source that already
    pushed for the detached user would make the next user's first push
    ``source_sequence_out_of_order`` and wedge it in source recovery (CLIENT.md §12.28, a Go
    defect), so a used source is retired locally and a fresh one starts at 1.
    """
    rows = await fetch_all(
        conn,
        "SELECT next_source_bundle_id FROM _sync_source_state WHERE source_id = ?",
        (source_id,),
    )
    if not source_id or not rows or int(rows[0][0]) <= 1:
        return source_id
    fresh = await fresh_source_id(conn, avoid=(source_id,))
    await ensure_source(conn, fresh)
    return fresh


# --------------------------------------------------------------------------- reads


async def pending_sync_status(runtime: ClientRuntime) -> PendingSyncStatus:
    async with runtime.transaction() as conn:
        return await read_pending_status(conn)


async def sync_status(runtime: ClientRuntime) -> SyncStatus:
    async with runtime.transaction() as conn:
        await ensure_connected(runtime, conn, "SyncStatus()")
        return await read_sync_status(conn, runtime.counters)


async def source_info(runtime: ClientRuntime) -> SourceInfo:
    if not runtime.source_id:
        raise OpenRequiredError("SourceInfo()")
    async with runtime.transaction() as conn:
        attachment = await load_attachment(conn)
        operation = await load_operation(conn)
    recovering = operation.kind is OperationKind.SOURCE_RECOVERY
    reason: SourceRecoveryCode | None = None
    if recovering:
        try:
            reason = SourceRecoveryCode(operation.reason)
        except ValueError:
            reason = SourceRecoveryCode.HISTORY_PRUNED
    return SourceInfo(
        current_source_id=attachment.current_source_id,
        rebuild_required=attachment.rebuild_required,
        source_recovery_required=recovering,
        source_recovery_reason=reason,
    )


async def last_bundle_seq_seen(runtime: ClientRuntime) -> int:
    async with runtime.transaction() as conn:
        attachment = await ensure_connected(runtime, conn, "LastBundleSeqSeen()")
    return attachment.last_bundle_seq_seen


# --------------------------------------------------------------------------- uninstall


async def uninstall_sync(runtime: ClientRuntime) -> None:
    """Drop triggers and metadata tables, keep business data, then close the client (§4.9)."""
    async with runtime.transaction() as conn:
        existing = {
            str(row[0])
            for row in await fetch_all(conn, "SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        configured = [t.name for t in runtime.managed.tables]
        tables = (
            await managed_table_names(conn, runtime.schema, configured)
            if "_sync_managed_tables" in existing
            else configured
        )
        for table in tables:
            await drop_triggers(conn, table)
        for name in METADATA_TABLES:
            await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote_identifier(name)}")
    runtime.disconnect()
    runtime.source_id = ""
    runtime.closed = True
    OWNERSHIP.release(runtime.ownership_key)
