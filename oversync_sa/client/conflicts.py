"""Push conflicts: the resolver API and applying a resolution (CLIENT.md §6).

A structured ``409 push_conflict`` rejects the whole bundle. The client asks a
:class:`ConflictResolver` what to do with the conflicting row, then - in one authoritative
transaction - applies that decision, requeues every other frozen row as a dirty intent and
discards the outbox, so the next attempt re-freezes under the same ``source_bundle_id``.

Encodings (a deliberate normalisation, §12.26): every payload a resolver sees or returns is in
the **wire** encoding - ``local_payload`` is converted from the captured local form, so BLOB
columns are base64 / UUID text on both sides and a :class:`KeepMerged` payload is built in the
same encoding the server row arrives in. ``KeepLocal`` is applied through that wire form too,
which avoids Go's hex-as-base64 corruption of BLOB columns (§12.25).

A result that cannot be applied to the conflict is *invalid*: the whole frozen bundle goes back
to ``_sync_dirty_rows`` unchanged and :class:`InvalidConflictResolutionError` is raised (§6.4).
Unlike Go, applying ``KeepLocal``/``KeepMerged`` to an INSERT the server has no row for, and a
merged payload whose member names are not the lower-cased column names or whose values do not
decode, are classified as invalid too, instead of leaving a ``prepared`` outbox that hits the
same conflict forever (§12.32).

Foreign keys: the server's row can depend on rows this device has not pulled, so applying it
alone fails SQLite's deferred FK check at COMMIT. Go then keeps the outbox and fails the same
way on every push; here server-wins waits for the pull instead and a kept/merged payload is
invalid (:func:`_fallback_plan`). When the rows the server's row references are rows this
device itself deletes, server-wins keeps the server's row with the local values of those
references and pushes it as an update instead (:func:`_relinked_plan`), so the deletions can
go through. A server-wins delete also turns the dirty rows of children its local cascade
removed into deletions (:func:`_drop_cascaded_intents`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client.encoding import (
    delete_row,
    local_key_json,
    local_payload_to_wire,
    local_pk_from_key_json,
    local_pk_from_wire_key,
    serialize_row,
    upsert_row,
    wire_payload_to_values,
)
from oversync_sa.client.errors import (
    InvalidConflictResolutionError,
    KeyEncodingError,
    PayloadEncodingError,
)
from oversync_sa.client.local_schema import fetch_all
from oversync_sa.client.outbox import (
    Intent,
    OutboxBundle,
    OutboxRow,
    discard_outbox,
    outbox_intents,
    requeue,
)
from oversync_sa.client.replay import (
    RowStateWrite,
    authoritative_transaction,
    delete_row_states,
    live_payloads,
    write_row_states,
)
from oversync_sa.client.runtime import ClientRuntime
from oversync_sa.client.state import load_attachment
from oversync_sa.client.validation import ManagedSchema, TableInfo
from oversync_sa.errors import PushConflictError
from oversync_sa.wire import Op, PushConflictDetails, SyncKey, canonical_json

__all__ = [
    "AcceptServer",
    "ClientWinsResolver",
    "ConflictContext",
    "ConflictPlan",
    "ConflictResolver",
    "KeepLocal",
    "KeepMerged",
    "MergeResult",
    "PerTableResolver",
    "ServerWinsResolver",
    "apply_conflict_plan",
    "build_context",
    "conflict_details",
    "find_conflicting_row",
    "plan_resolution",
    "resolve_conflict",
    "resolve_with",
]

_log = logging.getLogger("oversync_sa.client.push")

_decode_json: Final = msgspec.json.Decoder().decode


# --------------------------------------------------------------------------- resolver API


@dataclass(frozen=True, slots=True)
class ConflictContext:
    """What a resolver knows about one conflict. All payloads are wire-encoded JSON objects.

    ``local_payload`` is the frozen row's after-image (``None`` for a DELETE);
    ``server_row`` the server's current row (``None`` when it has none or it is deleted).
    """

    schema: str
    table: str
    key: SyncKey
    local_op: Op
    local_payload: dict[str, Any] | None
    base_row_version: int
    server_row_version: int
    server_row_deleted: bool
    server_row: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class AcceptServer:
    """Discard the local change; the server's row (or its absence) becomes local state."""


@dataclass(frozen=True, slots=True)
class KeepLocal:
    """Keep the local change and push it again on top of the server's version."""


@dataclass(frozen=True, slots=True)
class KeepMerged:
    """Write ``payload`` locally and push it on top of the server's version.

    ``payload`` is a wire-encoded JSON object (a mapping, or its JSON text/bytes) with exactly
    the table's columns under their lower-cased names.
    """

    payload: Mapping[str, Any] | str | bytes


MergeResult = AcceptServer | KeepLocal | KeepMerged


@runtime_checkable
class ConflictResolver(Protocol):
    """Decides one conflict; may be a plain or an ``async`` method."""

    def resolve(self, context: ConflictContext) -> MergeResult | Awaitable[MergeResult]: ...


class ServerWinsResolver:
    """The default: the server's state always wins."""

    def resolve(self, context: ConflictContext) -> MergeResult:
        return AcceptServer()


class ClientWinsResolver:
    """The local change always wins (re-pushed on top of the server's version)."""

    def resolve(self, context: ConflictContext) -> MergeResult:
        return KeepLocal()


@dataclass(frozen=True, slots=True)
class PerTableResolver:
    """Route conflicts by table name (case-insensitive) to ``tables``, else to ``default``."""

    default: ConflictResolver = field(default_factory=ServerWinsResolver)
    tables: Mapping[str, ConflictResolver] = field(default_factory=dict)

    def resolve(self, context: ConflictContext) -> MergeResult | Awaitable[MergeResult]:
        by_name = {name.strip().lower(): r for name, r in self.tables.items()}
        return by_name.get(context.table.lower(), self.default).resolve(context)


async def resolve_with(resolver: ConflictResolver | None, context: ConflictContext) -> object:
    """Run ``resolver`` (server-wins when ``None``); the result is validated by the planner."""
    chosen = resolver if resolver is not None else ServerWinsResolver()
    result: object = chosen.resolve(context)
    if inspect.isawaitable(result):
        result = await result
    return result


# --------------------------------------------------------------------------- conflict lookup


def conflict_details(error: PushConflictError) -> PushConflictDetails | None:
    """The structured conflict of ``error``; ``None`` when absent or malformed (§6.1)."""
    if error.conflict is None:
        return None
    try:
        # Through JSON, because ``server_row`` is a raw JSON member of the model.
        return msgspec.json.decode(msgspec.json.encode(error.conflict), type=PushConflictDetails)
    except (msgspec.ValidationError, msgspec.DecodeError):
        _log.warning("push_conflict body has a malformed conflict object")
        return None


def find_conflicting_row(bundle: OutboxBundle, details: PushConflictDetails) -> OutboxRow | None:
    """The frozen row the server conflicted on: same schema/table, canonically equal wire key."""
    wanted = canonical_json(details.key)
    for row in bundle.rows:
        if (
            row.schema == details.schema
            and row.table == details.table.lower()
            and canonical_json(row.wire_key) == wanted
        ):
            return row
    return None


def build_context(
    managed: ManagedSchema, row: OutboxRow, details: PushConflictDetails
) -> ConflictContext:
    """The resolver's view of the conflict, payloads normalised to the wire encoding."""
    info = managed.table(row.table)
    local = None
    if row.local_payload is not None:
        local = local_payload_to_wire(info, row.local_payload, key=row.key_json)
    server: Any = None
    if len(details.server_row) > 0:
        server = _decode_json(bytes(details.server_row))
    return ConflictContext(
        schema=details.schema,
        table=row.table,
        key=dict(details.key),
        local_op=row.op,
        local_payload=local,
        base_row_version=details.base_row_version,
        server_row_version=details.server_row_version,
        server_row_deleted=details.server_row_deleted,
        server_row=server if isinstance(server, dict) else None,
    )


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class ConflictPlan:
    """How to apply a valid resolution to the conflicting key (§6.3).

    ``write`` is a wire payload to upsert, or ``None`` to delete the local row (only when
    ``delete_local``). ``row_state`` ``None`` with ``forget_row_state`` drops the key's row
    state. ``requeue_op`` re-queues an intent with base ``server_row_version``; its payload is
    the row as written, re-serialised in local encoding.
    """

    info: TableInfo
    key_json: str
    write: Mapping[str, Any] | None
    delete_local: bool
    row_state: RowStateWrite | None
    forget_row_state: bool
    requeue_op: Op | None


class _Invalid(Exception):
    """Internal: the resolver's result does not apply to this conflict."""


def _merged_payload(info: TableInfo, merged: KeepMerged) -> Mapping[str, Any]:
    payload: Any = merged.payload
    if isinstance(payload, str | bytes):
        try:
            payload = _decode_json(payload)
        except msgspec.DecodeError:
            payload = None
    if not isinstance(payload, Mapping):
        raise _Invalid(f"KeepMerged for {info.name} must provide a JSON object payload")
    expected = {c.json_name for c in info.columns}
    if set(payload) != expected:
        raise _Invalid(
            f"KeepMerged for {info.name} must include exactly every table column"
            f" (lower-case names {sorted(expected)})"
        )
    try:
        wire_payload_to_values(info, payload)
    except PayloadEncodingError as exc:
        raise _Invalid(f"KeepMerged payload for {info.name} does not decode: {exc}") from exc
    return payload


def plan_resolution(
    managed: ManagedSchema, row: OutboxRow, context: ConflictContext, result: object
) -> ConflictPlan:
    """Turn a resolver result into a plan, or raise ``_Invalid`` (see the module docstring)."""
    info = managed.table(row.table)
    sv = context.server_row_version
    server_live = context.server_row is not None and not context.server_row_deleted
    server_missing = context.server_row is None and not context.server_row_deleted

    def plan(
        write: Mapping[str, Any] | None = None,
        *,
        deleted: bool | None = None,
        requeue_op: Op | None = None,
        delete_local: bool = False,
    ) -> ConflictPlan:
        state = None if deleted is None else RowStateWrite(info.name, row.key_json, sv, deleted)
        return ConflictPlan(
            info, row.key_json, write, delete_local, state, deleted is None, requeue_op
        )

    if isinstance(result, AcceptServer):
        if server_missing:
            return plan(delete_local=True)
        if context.server_row_deleted:
            return plan(delete_local=True, deleted=True)
        return plan(context.server_row, deleted=False)
    if not isinstance(result, KeepLocal | KeepMerged):
        raise _Invalid(f"unknown resolver result {result!r}")

    if row.op is Op.DELETE:
        if isinstance(result, KeepMerged):
            raise _Invalid(f"KeepMerged cannot resolve a DELETE of {info.name}")
        if server_missing:
            return plan(delete_local=True)
        if context.server_row_deleted:
            return plan(delete_local=True, deleted=True)
        return plan(delete_local=True, deleted=False, requeue_op=Op.DELETE)

    payload = (
        context.local_payload if isinstance(result, KeepLocal) else _merged_payload(info, result)
    )
    assert payload is not None  # INSERT/UPDATE rows always carry a payload
    if row.op is Op.UPDATE and not server_live:
        raise _Invalid(f"cannot keep an UPDATE of {info.name}: the server row is gone")
    if row.op is Op.INSERT and server_missing:
        raise _Invalid(f"cannot keep an INSERT of {info.name}: the server reports no row")
    if server_live:
        return plan(payload, deleted=False, requeue_op=Op.UPDATE)
    return plan(payload, deleted=True, requeue_op=Op.INSERT)


# --------------------------------------------------------------------------- applying


async def resolve_conflict(
    runtime: ClientRuntime,
    bundle: OutboxBundle,
    error: PushConflictError,
    resolver: ConflictResolver | None,
) -> None:
    """Resolve the conflict that rejected ``bundle`` and release the outbox (§6.2-6.4).

    Re-raises ``error`` untouched (outbox kept ``prepared``) when it carries no usable conflict
    or names a key that is not in the bundle. Raises
    :class:`~oversync_sa.client.errors.InvalidConflictResolutionError` after restoring the whole
    bundle to dirty rows when the result does not apply. A plan whose write breaks a local
    foreign key is replaced by :func:`_relinked_plan` or :func:`_fallback_plan` instead of
    wedging the device. Other
    errors while applying a valid plan roll the transaction back and leave the outbox
    ``prepared``.
    """
    details = conflict_details(error)
    row = None if details is None else find_conflicting_row(bundle, details)
    if details is None or row is None:
        raise error
    context = build_context(runtime.managed, row, details)
    result = await resolve_with(resolver, context)
    try:
        plan: ConflictPlan | None = plan_resolution(runtime.managed, row, context, result)
        reason = ""
    except _Invalid as exc:
        plan, reason = None, str(exc)
    if plan is not None and not await _commit_plan(runtime, bundle, row, plan):
        relinked = await _relinked_plan(runtime, bundle, row, context, result)
        if relinked is None or not await _commit_plan(runtime, bundle, row, relinked):
            plan, reason = await _fallback_plan(runtime, row, context, result, plan)
            if plan is not None:
                await _commit_plan(runtime, bundle, row, plan, fk_failure_is_error=True)
    if plan is None:
        await _commit_plan(runtime, bundle, row, None, fk_failure_is_error=True)
        _log.warning("invalid conflict resolution for %s: %s", row.table, reason)
        raise InvalidConflictResolutionError(details, result, reason)
    runtime.counters.conflicts_resolved += 1
    _log.info(
        "resolved push conflict on %s with %s", row.table, type(result).__name__,
        extra={"user": runtime.user_id, "source_id": runtime.source_id, "table": row.table},
    )


async def _commit_plan(
    runtime: ClientRuntime,
    bundle: OutboxBundle,
    row: OutboxRow,
    plan: ConflictPlan | None,
    *,
    fk_failure_is_error: bool = False,
) -> bool:
    """Apply ``plan`` in one authoritative transaction; ``False`` when COMMIT broke a local FK.

    Foreign keys are deferred, so SQLite checks them only at COMMIT, where an integrity error
    can only be a foreign-key violation; the transaction is rolled back before returning.
    """
    applied = False
    try:
        async with authoritative_transaction(runtime) as conn:
            await apply_conflict_plan(conn, runtime.managed, bundle, row, plan)
            applied = True
    except IntegrityError:
        if fk_failure_is_error or not applied:
            raise
        return False
    return True


async def _relinked_plan(
    runtime: ClientRuntime,
    bundle: OutboxBundle,
    row: OutboxRow,
    context: ConflictContext,
    result: object,
) -> ConflictPlan | None:
    """Server-wins for a row whose server version references rows this device deletes.

    A stale device unlinked a row from a parent and deleted the parent, while another device
    changed the row: the unlink conflicts. The server's row still references the parent, so
    it cannot be installed locally, and dropping the unlink (:func:`_fallback_plan`) would leave
    the device's DELETE of the parent to be refused by the server's foreign key on every push.
    Instead the server's row is kept with the local values of the foreign-key columns whose
    targets are missing here and deleted by this device's own pending changes (in the frozen
    bundle or dirty since), and requeued as an UPDATE on the server's row version: the
    server's other columns win and the unlink and the deletion still reach the server.

    ``None`` (use :func:`_fallback_plan`) unless the result is server-wins, the local change
    carries a payload, the server has a live row and at least one such column differs from
    the local value. Only references to the parent's sync key are considered.
    """
    server, local = context.server_row, context.local_payload
    if (
        not isinstance(result, AcceptServer)
        or row.op is Op.DELETE
        or local is None
        or server is None
        or context.server_row_deleted
    ):
        return None
    managed = runtime.managed
    info = managed.table(row.table)
    candidates: list[tuple[str, TableInfo, str]] = []
    for fk in info.foreign_keys:
        column = fk.from_column.lower()
        value = server.get(column)
        if value is None or column not in local or local[column] == value:
            continue
        try:
            parent = managed.table(fk.ref_table)
        except KeyError:
            continue
        if fk.to_column is not None and fk.to_column.lower() != parent.key_json_name:
            continue
        try:
            parent_pk = local_pk_from_wire_key(parent, {parent.key_json_name: value})
        except KeyEncodingError:
            continue
        candidates.append((column, parent, local_key_json(parent, parent_pk)))
    if not candidates:
        return None
    frozen_deletes = {
        (r.table, r.key_json)
        for r in bundle.rows
        if r.schema == managed.schema and r.op is Op.DELETE
    }
    relinked: list[str] = []
    async with runtime.transaction() as conn:
        for column, parent, key_json in candidates:
            if await live_payloads(conn, parent, [key_json]):
                continue
            dirty = await fetch_all(
                conn,
                "SELECT payload FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ?"
                " AND key_json = ?",
                (managed.schema, parent.name, key_json),
            )
            deleted_since = bool(dirty) and dirty[0][0] is None
            if deleted_since or (not dirty and (parent.name, key_json) in frozen_deletes):
                relinked.append(column)
    if not relinked:
        return None
    merged = {**server, **{column: local[column] for column in relinked}}
    try:
        plan = plan_resolution(managed, row, context, KeepMerged(merged))
    except _Invalid:
        return None
    _log.info(
        "server wins for %s key %s with the local %s: the server's row references rows this"
        " device deletes", row.table, row.key_json, ", ".join(relinked),
    )
    return plan


async def _fallback_plan(
    runtime: ClientRuntime,
    row: OutboxRow,
    context: ConflictContext,
    result: object,
    plan: ConflictPlan,
) -> tuple[ConflictPlan | None, str]:
    """What to apply instead of ``plan``, whose write broke a local foreign key.

    Used when :func:`_relinked_plan` has nothing to offer or its write breaks a foreign key too.

    The server's row (or its deletion) depends on rows this device has not pulled yet: the
    owner unlinked the posts of a user it deleted, or moved a row under a new parent. Go
    returns the commit error and keeps the outbox, so every push hits the same conflict and
    fails the same way (a wedged device). Server-wins instead drops the local change and
    leaves the row and its row state as they are: the row state's older version makes the
    pull that follows the push apply the server's row together with the rows it depends on,
    in one bundle transaction. A kept or merged payload cannot be applied without those rows
    either, so it is an invalid resolution (``None``: the whole bundle back to dirty rows)
    and the resolver can choose again.
    """
    where = f"{row.table} key {row.key_json}"
    if not isinstance(result, AcceptServer):
        return None, (
            f"{type(result).__name__} for {where} breaks a local foreign key (the row references"
            " a row this device does not have, or local rows still reference it); return"
            " AcceptServer, or a payload whose references exist locally"
        )
    async with runtime.transaction() as conn:
        seen = (await load_attachment(conn)).last_bundle_seq_seen
    if context.server_row_version <= seen:
        # Not expected (the device would have pulled that version before editing the row);
        # the pull will not deliver the row again, so say how to refresh it.
        _log.warning(
            "server wins for %s, but its row version %d depends on rows missing here and is"
            " not newer than the checkpoint %d: the local row stays stale until the server"
            " changes it again; rebuild() refreshes it", where, context.server_row_version, seen,
        )
    else:
        _log.info("server wins for %s; its row arrives with the rows it depends on at the next"
                  " pull", where)
    return ConflictPlan(plan.info, plan.key_json, None, False, None, False, None), ""


async def apply_conflict_plan(
    conn: AsyncConnection,
    managed: ManagedSchema,
    bundle: OutboxBundle,
    row: OutboxRow,
    plan: ConflictPlan | None,
) -> None:
    """Apply ``plan`` (``None`` = invalid: restore everything) and release the outbox.

    ``conn`` must be an authoritative transaction. Every frozen row except the conflicting
    one (all of them when ``plan`` is ``None``) is requeued with its frozen op, base and
    payload; ``next_source_bundle_id`` is untouched so the retry reuses the bundle id.
    """
    skip = () if plan is None else (row.row_ordinal,)
    newer = await _keys_edited_since_freeze(conn)
    # A key the user wrote again while the bundle was uploading already has a dirty row, and
    # the capture computed its op and base from the same row state the frozen intent saw
    # (nothing was replayed in between), with the newer payload. Requeueing the frozen intent
    # over it (Go does, §5.8 overwrites) would push the older value and lose the newer edit.
    await requeue(conn, [
        intent for intent in outbox_intents(bundle, skip=skip)
        if (intent.schema, intent.table, intent.key_json) not in newer
    ])
    if plan is not None:
        await _execute(
            conn, managed, plan, newer_edit=(row.schema, row.table, row.key_json) in newer
        )
    await discard_outbox(conn, bundle.source_bundle_id)


async def _keys_edited_since_freeze(conn: AsyncConnection) -> set[tuple[str, str, str]]:
    rows = await fetch_all(conn, "SELECT schema_name, table_name, key_json FROM _sync_dirty_rows")
    return {(str(r[0]), str(r[1]), str(r[2])) for r in rows}


async def _execute(
    conn: AsyncConnection, managed: ManagedSchema, plan: ConflictPlan, *, newer_edit: bool = False
) -> None:
    info = plan.info
    local_pk = local_pk_from_key_json(info, plan.key_json)
    if newer_edit and plan.requeue_op is not None and plan.row_state is not None:
        await _keep_newer_edit(conn, managed, plan, local_pk)
        return
    requeued_payload: str | None = None
    if plan.delete_local:
        await delete_row(conn, info, local_pk)
        await _drop_cascaded_intents(conn, managed, info)
    elif plan.write is not None:
        await upsert_row(conn, info, plan.write, key=local_pk)
        requeued_payload = await serialize_row(conn, info, local_pk)
    if plan.row_state is not None:
        await write_row_states(conn, managed.schema, [plan.row_state])
    elif plan.forget_row_state:
        await delete_row_states(conn, managed.schema, [(info.name, plan.key_json)])
    if plan.requeue_op is not None and plan.row_state is not None:
        await requeue(
            conn,
            [
                Intent(
                    managed.schema, info.name, plan.key_json, plan.requeue_op,
                    plan.row_state.row_version,
                    None if plan.requeue_op is Op.DELETE else requeued_payload,
                )
            ],
        )


async def _keep_newer_edit(
    conn: AsyncConnection, managed: ManagedSchema, plan: ConflictPlan, local_pk: str
) -> None:
    """Keep-local resolution of a key the user edited again after the freeze.

    The resolver decided that the local side wins, but it saw the frozen payload; the live row
    (or its absence) is the user's newer intent, so that is what is kept and pushed, rebased on
    the server's row version like any kept intent. A local delete of a row the server no longer
    has leaves nothing to push.
    """
    state = plan.row_state
    assert state is not None
    info = plan.info
    await write_row_states(conn, managed.schema, [state])
    live = await serialize_row(conn, info, local_pk)
    if live is None and state.deleted:
        await conn.exec_driver_sql(
            "DELETE FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ?"
            " AND key_json = ?",
            (managed.schema, info.name, plan.key_json),
        )
        return
    op = Op.DELETE if live is None else Op.INSERT if state.deleted else Op.UPDATE
    await requeue(
        conn, [Intent(managed.schema, info.name, plan.key_json, op, state.row_version, live)]
    )


def _referencing_tables(managed: ManagedSchema, root: str) -> list[TableInfo]:
    """``root`` and every managed table referencing it, directly or through other tables."""
    found = {root}
    grew = True
    while grew:
        grew = False
        for info in managed.tables:
            if info.name not in found and any(
                fk.ref_table.lower() in found for fk in info.foreign_keys
            ):
                found.add(info.name)
                grew = True
    return [info for info in managed.tables if info.name in found]


async def _drop_cascaded_intents(
    conn: AsyncConnection, managed: ManagedSchema, root: TableInfo
) -> None:
    """Turn dirty upserts of rows that a local ``ON DELETE CASCADE`` just removed into deletes.

    The authoritative delete cascades with capture suppressed, so a child the user inserted
    or edited keeps a dirty payload for a row that is gone; pushed, it would re-insert the
    child under a parent the server deleted and fail the server's foreign-key check on every
    push. A NULL payload is what capture records for a deletion: a never-pushed child becomes
    a no-op, a pushed one a DELETE (the server cascaded it too).
    """
    for info in _referencing_tables(managed, root.name):
        rows = await fetch_all(
            conn,
            "SELECT key_json FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ?"
            " AND payload IS NOT NULL",
            (managed.schema, info.name),
        )
        keys = [str(r[0]) for r in rows]
        live = await live_payloads(conn, info, keys) if keys else {}
        gone = [(managed.schema, info.name, k) for k in keys if k not in live]
        if gone:
            _log.info("dropping %d dirty %s rows removed by a cascade", len(gone), info.name)
            await conn.exec_driver_sql(
                "UPDATE _sync_dirty_rows SET op = 'DELETE', payload = NULL"
                " WHERE schema_name = ? AND table_name = ? AND key_json = ?",
                gone,
            )
