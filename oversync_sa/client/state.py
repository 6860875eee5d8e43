"""Reads and writes of the persisted client state machine (CLIENT.md §2.2, §4.10).

Every function runs inside the caller's transaction (an :class:`AsyncConnection` obtained from
:meth:`~oversync_sa.client.runtime.ClientRuntime.transaction`), so a lifecycle step composes
several of them atomically. Singleton rows are seeded by
:func:`~oversync_sa.client.local_schema.initialize_database` and are only ever updated here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client.counters import ClientCounters
from oversync_sa.client.encoding import quote_identifier
from oversync_sa.client.errors import AttachRequiredError, OpenRequiredError
from oversync_sa.client.local_schema import fetch_all
from oversync_sa.client.results import (
    AuthorityStatus,
    PendingSyncStatus,
    SyncCounters,
    SyncStatus,
)
from oversync_sa.client.runtime import ClientRuntime
from oversync_sa.client.table_set import registered_tables
from oversync_sa.errors import OversyncError

__all__ = [
    "AttachmentState",
    "BindingState",
    "OperationKind",
    "OperationState",
    "OutboxState",
    "clear_managed_tables",
    "count_dirty_rows",
    "count_outbox_rows",
    "ensure_connected",
    "read_pending_status",
    "read_sync_status",
    "ensure_source",
    "fresh_source_id",
    "load_attachment",
    "load_operation",
    "managed_table_names",
    "save_attachment",
    "save_operation",
    "set_rebuild_required",
    "switch_source",
]


class BindingState(StrEnum):
    ANONYMOUS = "anonymous"
    ATTACHED = "attached"


class OperationKind(StrEnum):
    NONE = "none"
    REMOTE_REPLACE = "remote_replace"
    SOURCE_RECOVERY = "source_recovery"


class OutboxState(StrEnum):
    NONE = "none"
    PREPARED = "prepared"
    COMMITTED_REMOTE = "committed_remote"


@dataclass(frozen=True, slots=True)
class AttachmentState:
    """The ``_sync_attachment_state`` singleton (see §2.2 for each column's meaning)."""

    current_source_id: str = ""
    binding_state: BindingState = BindingState.ANONYMOUS
    attached_user_id: str = ""
    schema_name: str = ""
    last_bundle_seq_seen: int = 0
    rebuild_required: bool = False
    pending_initialization_id: str = ""

    @property
    def attached(self) -> bool:
        return self.binding_state is BindingState.ATTACHED

    def attached_to(self, user_id: str) -> bool:
        return self.attached and self.attached_user_id == user_id

    @property
    def lost_seed_user_id(self) -> str:
        """The user whose initialization lease this (now anonymous) database lost, else ``''``.

        Go clears ``attached_user_id`` with the lease; we keep it so the unsent seed can only
        go to that user (``oversync_sa.client.lease``, CLIENT.md §12.29).
        """
        return "" if self.attached else self.attached_user_id


@dataclass(frozen=True, slots=True)
class OperationState:
    """The ``_sync_operation_state`` singleton: a pending destructive transition, if any."""

    kind: OperationKind = OperationKind.NONE
    target_user_id: str = ""
    reason: str = ""
    replacement_source_id: str = ""
    staged_snapshot_id: str = ""
    snapshot_bundle_seq: int = 0
    snapshot_row_count: int = 0

    def without_stage(self) -> OperationState:
        return replace(self, staged_snapshot_id="", snapshot_bundle_seq=0, snapshot_row_count=0)


_ATTACHMENT_COLUMNS: Final = (
    "current_source_id, binding_state, attached_user_id, schema_name, last_bundle_seq_seen,"
    " rebuild_required, pending_initialization_id"
)
_OPERATION_COLUMNS: Final = (
    "kind, target_user_id, reason, replacement_source_id, staged_snapshot_id,"
    " snapshot_bundle_seq, snapshot_row_count"
)


async def load_attachment(conn: AsyncConnection) -> AttachmentState:
    (row,) = await fetch_all(
        conn, f"SELECT {_ATTACHMENT_COLUMNS} FROM _sync_attachment_state WHERE singleton_key = 1"
    )
    return AttachmentState(
        current_source_id=str(row[0]),
        binding_state=BindingState(row[1]),
        attached_user_id=str(row[2]),
        schema_name=str(row[3]),
        last_bundle_seq_seen=int(row[4]),
        rebuild_required=bool(row[5]),
        pending_initialization_id=str(row[6]),
    )


async def save_attachment(conn: AsyncConnection, state: AttachmentState) -> None:
    await conn.exec_driver_sql(
        "UPDATE _sync_attachment_state SET current_source_id = ?, binding_state = ?,"
        " attached_user_id = ?, schema_name = ?, last_bundle_seq_seen = ?,"
        " rebuild_required = ?, pending_initialization_id = ? WHERE singleton_key = 1",
        (
            state.current_source_id,
            state.binding_state.value,
            state.attached_user_id,
            state.schema_name,
            state.last_bundle_seq_seen,
            int(state.rebuild_required),
            state.pending_initialization_id,
        ),
    )


async def set_rebuild_required(conn: AsyncConnection, required: bool) -> None:
    await conn.exec_driver_sql(
        "UPDATE _sync_attachment_state SET rebuild_required = ? WHERE singleton_key = 1",
        (int(required),),
    )


async def load_operation(conn: AsyncConnection) -> OperationState:
    (row,) = await fetch_all(
        conn, f"SELECT {_OPERATION_COLUMNS} FROM _sync_operation_state WHERE singleton_key = 1"
    )
    return OperationState(
        kind=OperationKind(row[0]),
        target_user_id=str(row[1]),
        reason=str(row[2]),
        replacement_source_id=str(row[3]),
        staged_snapshot_id=str(row[4]),
        snapshot_bundle_seq=int(row[5]),
        snapshot_row_count=int(row[6]),
    )


async def save_operation(conn: AsyncConnection, state: OperationState) -> None:
    await conn.exec_driver_sql(
        "UPDATE _sync_operation_state SET kind = ?, target_user_id = ?, reason = ?,"
        " replacement_source_id = ?, staged_snapshot_id = ?, snapshot_bundle_seq = ?,"
        " snapshot_row_count = ? WHERE singleton_key = 1",
        (
            state.kind.value,
            state.target_user_id,
            state.reason,
            state.replacement_source_id,
            state.staged_snapshot_id,
            state.snapshot_bundle_seq,
            state.snapshot_row_count,
        ),
    )


async def ensure_source(conn: AsyncConnection, source_id: str) -> None:
    """Make sure ``_sync_source_state`` has a row for ``source_id`` (next bundle id 1)."""
    await conn.exec_driver_sql(
        "INSERT INTO _sync_source_state (source_id, next_source_bundle_id) VALUES (?, 1)"
        " ON CONFLICT (source_id) DO NOTHING",
        (source_id,),
    )


async def switch_source(conn: AsyncConnection, old_source_id: str, new_source_id: str) -> None:
    """Make ``new_source_id`` the durable current source, recording that it replaced the old.

    Local bookkeeping only: the caller decides whether the server must hear of it (a rotated
    rebuild) or not (a source the server has never seen needs no reservation, SERVER.md §7.2).
    """
    await ensure_source(conn, new_source_id)
    await conn.exec_driver_sql(
        "UPDATE _sync_source_state SET replaced_by_source_id = ? WHERE source_id = ?",
        (new_source_id, old_source_id),
    )
    await conn.exec_driver_sql(
        "UPDATE _sync_attachment_state SET current_source_id = ? WHERE singleton_key = 1",
        (new_source_id,),
    )


_MAX_SOURCE_ID_TRIES: Final = 100


async def fresh_source_id(
    conn: AsyncConnection,
    avoid: Iterable[str] = (),
    generate: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> str:
    """A source id never used by this database (UUIDv4 text), §4.3 step 2."""
    excluded = set(avoid)
    for _ in range(_MAX_SOURCE_ID_TRIES):
        candidate = generate()
        if not candidate or candidate in excluded:
            continue
        used = await fetch_all(
            conn, "SELECT 1 FROM _sync_source_state WHERE source_id = ?", (candidate,)
        )
        if not used:
            return candidate
    raise OversyncError("failed to generate a fresh internal source id")


async def count_dirty_rows(conn: AsyncConnection) -> int:
    return int((await fetch_all(conn, "SELECT COUNT(*) FROM _sync_dirty_rows"))[0][0])


async def count_outbox_rows(conn: AsyncConnection) -> int:
    return int((await fetch_all(conn, "SELECT COUNT(*) FROM _sync_outbox_rows"))[0][0])


async def managed_table_names(
    conn: AsyncConnection, schema: str, configured: Iterable[str]
) -> list[str]:
    """Registry tables (alphabetical) followed by configured tables not in the registry."""
    registered = await registered_tables(conn, schema)
    seen = set(registered)
    return registered + [name for name in configured if name not in seen]


async def clear_managed_tables(
    conn: AsyncConnection,
    schema: str,
    configured: Iterable[str],
    *,
    preserve_outbox: bool = False,
) -> None:
    """Wipe every managed (and historically managed) table and its sync bookkeeping.

    The caller must have set apply mode. Foreign keys are deferred for the rest of the
    transaction first, so the alphabetical clear order cannot trip an immediate FK (the Go
    client fails Detach there, CLIENT.md §12.43); they are still checked at COMMIT, where every
    managed table is empty. The snapshot stage is left to the caller.
    """
    await conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    existing = {
        str(row[0]).lower()
        for row in await fetch_all(conn, "SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    for table in await managed_table_names(conn, schema, configured):
        if table in existing:
            await conn.exec_driver_sql(f"DELETE FROM {quote_identifier(table)}")
        await conn.exec_driver_sql(
            "DELETE FROM _sync_row_state WHERE schema_name = ? AND table_name = ?",
            (schema, table),
        )
    await conn.exec_driver_sql("DELETE FROM _sync_dirty_rows")
    if not preserve_outbox:
        await conn.exec_driver_sql("DELETE FROM _sync_outbox_rows")
        await conn.exec_driver_sql(
            "UPDATE _sync_outbox_bundle SET state = 'none', source_id = '', source_bundle_id = 0,"
            " canonical_request_hash = '', row_count = 0, initialization_id = '',"
            " remote_bundle_hash = '', remote_bundle_seq = 0 WHERE singleton_key = 1"
        )
        await conn.exec_driver_sql("DELETE FROM _sync_push_stage")


async def read_pending_status(conn: AsyncConnection) -> PendingSyncStatus:
    """§4.7: dirty + outbox rows + 1 for an unconsumed initialization lease."""
    attachment = await load_attachment(conn)
    total = await count_dirty_rows(conn) + await count_outbox_rows(conn)
    if attachment.pending_initialization_id:
        total += 1
    return PendingSyncStatus(
        has_pending_sync_data=total > 0,
        pending_row_count=total,
        # The rows of a lost seed are the user's unsynced writes, not anonymous ones.
        blocks_detach=bool(attachment.attached or attachment.lost_seed_user_id) and total > 0,
    )


async def read_sync_status(
    conn: AsyncConnection, counters: ClientCounters | None = None
) -> SyncStatus:
    """The durable status, with a snapshot of ``counters`` (the client's in-memory tally)."""
    attachment = await load_attachment(conn)
    if attachment.pending_initialization_id:
        authority = AuthorityStatus.PENDING_LOCAL_SEED
    else:
        live = await fetch_all(
            conn, "SELECT EXISTS (SELECT 1 FROM _sync_row_state WHERE deleted = 0)"
        )
        authority = (
            AuthorityStatus.AUTHORITATIVE_MATERIALIZED
            if live[0][0]
            else AuthorityStatus.AUTHORITATIVE_EMPTY
        )
    pending = await read_pending_status(conn)
    # pending_row_count adds 1 for an unconsumed initialization lease: not a queued change.
    lease = 1 if attachment.pending_initialization_id else 0
    return SyncStatus(
        authority=authority,
        pending=pending,
        last_bundle_seq_seen=attachment.last_bundle_seq_seen,
        dirty_queue_depth=pending.pending_row_count - lease,
        counters=counters.snapshot() if counters is not None else SyncCounters(),
    )


async def ensure_connected(
    runtime: ClientRuntime, conn: AsyncConnection, operation: str
) -> AttachmentState:
    """The connected-session precondition of §4.2; returns the attachment it checked.

    Touches no network, so a misuse never produces an HTTP request.
    """
    if not runtime.source_id:
        raise OpenRequiredError(operation)
    if not runtime.user_id:
        raise AttachRequiredError(operation)
    attachment = await load_attachment(conn)
    if not (
        runtime.session_connected
        and attachment.attached_to(runtime.user_id)
        and attachment.current_source_id == runtime.source_id
    ):
        raise AttachRequiredError(operation)
    return attachment
