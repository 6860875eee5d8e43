"""Losing the initialization lease without losing the rows it was seeding (CLIENT.md §4.10).

An ``initialize_local`` attach lets this device seed the user's empty scope with its local rows.
When the lease ends before the seed commits (it expired; maybe another device seeded the scope
meanwhile), the server answers the seed push ``initialization_expired`` / ``initialization_stale``
(or ``push_session_invalid`` once the scope is initialized) and the device must reconnect.

Go keeps the frozen seed in the outbox, reports "no pending rows" on the next connect because it
counts only dirty rows, and the ``remote_authoritative`` replace that follows wipes the outbox:
the seed and every edit made while attached vanish without a trace (§12.29). Here:

* the never-committed outbox goes back into ``_sync_dirty_rows`` (a newer dirty row for the same
  key wins: it is the later write), so the rows are ordinary pending changes again;
* the binding becomes ``anonymous`` as in Go, but ``attached_user_id`` keeps naming the user the
  rows were written for (:attr:`~oversync_sa.client.state.AttachmentState.lost_seed_user_id`):
  attaching that user carries the rows over the server snapshot as dirty rows (pushed next, with
  conflicts going to the resolver), attaching someone else is refused, and ``detach`` is blocked
  like for any attached user with unsynced rows;
* when a carried row breaks a local constraint next to the server's rows (a UNIQUE value both
  devices wrote, a foreign key), that attach fails with ``AttachLocalStateConflictError`` and
  leaves the database as it was, writable, instead of a ``remote_replace`` that can never
  finish (``snapshot.finalize_remote_replace``).

Every function runs inside the caller's transaction unless it takes the runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client.encoding import (
    delete_sql,
    local_payload_to_wire,
    local_pk_from_key_json,
    local_pk_to_sql,
    upsert_sql,
    wire_payload_to_values,
)
from oversync_sa.client.local_schema import NEXT_DIRTY_ORDINAL_SQL, SYNC_TIMESTAMP_SQL, fetch_all
from oversync_sa.client.outbox import discard_outbox, load_outbox
from oversync_sa.client.runtime import ClientRuntime
from oversync_sa.client.state import (
    BindingState,
    OperationState,
    OutboxState,
    load_attachment,
    save_attachment,
    save_operation,
)
from oversync_sa.client.validation import ManagedSchema

__all__ = [
    "DirtyRow",
    "drop_initialization_lease",
    "requeue_unsent_outbox",
    "restore_dirty_rows",
    "take_dirty_rows",
]

_log = logging.getLogger("oversync_sa.client.lease")

# Unlike the §5.8 requeue this never overwrites: a dirty row for the key was written after the
# freeze, so it already holds the newest local state of that row.
_REQUEUE_IF_ABSENT: Final = (
    "INSERT INTO _sync_dirty_rows (schema_name, table_name, key_json, op, base_row_version,"
    f" payload, dirty_ordinal, updated_at) VALUES (?, ?, ?, ?, ?, ?, ({NEXT_DIRTY_ORDINAL_SQL}),"
    f" {SYNC_TIMESTAMP_SQL})"
    " ON CONFLICT (schema_name, table_name, key_json) DO NOTHING"
)


async def requeue_unsent_outbox(conn: AsyncConnection) -> int:
    """Turn a ``prepared`` (never committed) outbox back into dirty rows; returns its size.

    A ``committed_remote`` outbox is left alone: the server has it, and only its replay is
    missing, which the next push does.
    """
    bundle = await load_outbox(conn)
    if bundle is None or bundle.state is not OutboxState.PREPARED:
        return 0
    await conn.exec_driver_sql(
        _REQUEUE_IF_ABSENT,
        [
            (r.schema, r.table, r.key_json, r.op.value, r.base_row_version, r.local_payload)
            for r in bundle.rows
        ],
    )
    await discard_outbox(conn, bundle.source_bundle_id)
    await conn.exec_driver_sql("DELETE FROM _sync_push_stage")
    return bundle.row_count


async def drop_initialization_lease(runtime: ClientRuntime) -> None:
    """The server ended our seed lease: disconnect, keeping every unsent row for the next attach.

    One transaction: the unsent outbox is requeued, the binding becomes ``anonymous`` with the
    lease id cleared while ``attached_user_id`` still names the user (see the module docstring).
    """
    user_id = runtime.user_id
    async with runtime.transaction() as conn:
        requeued = await requeue_unsent_outbox(conn)
        attachment = await load_attachment(conn)
        await save_attachment(
            conn,
            replace(
                attachment,
                binding_state=BindingState.ANONYMOUS,
                attached_user_id=user_id,
                pending_initialization_id="",
            ),
        )
        await save_operation(conn, OperationState())
    runtime.disconnect()
    _log.warning(
        "initialization lease of user %s lost; %d unsent seed rows are pending again,"
        " attach the same user to push them",
        user_id, requeued, extra={"user": user_id, "source_id": runtime.source_id},
    )


# --------------------------------------------------------------------------- remote replace


@dataclass(frozen=True, slots=True)
class DirtyRow:
    """One ``_sync_dirty_rows`` row, verbatim."""

    schema: str
    table: str
    key_json: str
    op: str
    base_row_version: int
    payload: str | None
    dirty_ordinal: int
    updated_at: str


async def take_dirty_rows(conn: AsyncConnection) -> list[DirtyRow]:
    """Read every dirty row (before a clear deletes them), in capture order."""
    return [
        DirtyRow(str(s), str(t), str(k), str(op), int(base), None if p is None else str(p),
                 int(ordinal), str(at))
        for s, t, k, op, base, p, ordinal, at in await fetch_all(
            conn,
            "SELECT schema_name, table_name, key_json, op, base_row_version, payload,"
            " dirty_ordinal, updated_at FROM _sync_dirty_rows ORDER BY dirty_ordinal",
        )
    ]


async def restore_dirty_rows(
    conn: AsyncConnection, managed: ManagedSchema, rows: Sequence[DirtyRow]
) -> None:
    """Re-apply ``rows`` over freshly applied server rows and queue them again, unchanged.

    The caller has set apply mode (the writes must not be captured) and deferred foreign keys.
    Each intent's after-image replaces the server's row (or deletes it); the dirty row keeps its
    base, so pushing it meets the server's current version exactly like an offline edit would:
    a stale base is a conflict for the resolver, never a silent overwrite.
    """
    kept: list[DirtyRow] = []
    for row in rows:
        try:
            info = managed.table(row.table)
        except KeyError:
            # Schema upgrades clear the queue of a table that leaves the managed set, so this
            # is a leftover the freeze would refuse anyway; say so instead of wedging attach.
            _log.warning("dropping pending %s of unmanaged table %s key %s",
                         row.op, row.table, row.key_json)
            continue
        kept.append(row)
        local_pk = local_pk_from_key_json(info, row.key_json)
        if row.payload is None:
            await conn.exec_driver_sql(delete_sql(info), (local_pk_to_sql(info, local_pk),))
        else:
            wire = local_payload_to_wire(info, row.payload, key=local_pk)
            await conn.exec_driver_sql(
                upsert_sql(info), wire_payload_to_values(info, wire, key=local_pk)
            )
    if kept:
        await conn.exec_driver_sql(
            "INSERT INTO _sync_dirty_rows (schema_name, table_name, key_json, op,"
            " base_row_version, payload, dirty_ordinal, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r.schema, r.table, r.key_json, r.op, r.base_row_version, r.payload,
                 r.dirty_ordinal, r.updated_at)
                for r in kept
            ],
        )
