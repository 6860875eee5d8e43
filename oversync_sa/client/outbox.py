"""The durable outbox: freezing dirty rows into one bundle (CLIENT.md §5.1) and requeueing (§5.8).

A push never uploads ``_sync_dirty_rows`` directly. It first *freezes* them, in one transaction,
into the single outbox bundle (``_sync_outbox_bundle`` + ``_sync_outbox_rows``) under the next
``source_bundle_id`` of the source. From then on that bundle is re-sent verbatim - same id, row
order, ops, bases and payloads - after any failure or restart until the server's committed copy
has been replayed locally; writes made meanwhile go to ``_sync_dirty_rows`` again.

*Requeue* is the inverse direction: it turns intents (from the outbox, a replay rebase or a
conflict plan) back into dirty rows. Unlike the capture triggers it overwrites
``base_row_version``, because the caller knows the new base.

Every function here runs inside the caller's transaction and never commits.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa._crashpoints import crash_point
from oversync_sa.client.encoding import (
    local_payload_to_wire,
    local_pk_from_key_json,
    wire_key,
)
from oversync_sa.client.errors import OutboxStateError
from oversync_sa.client.local_schema import (
    NEXT_DIRTY_ORDINAL_SQL,
    SYNC_TIMESTAMP_SQL,
    fetch_all,
)
from oversync_sa.client.state import OutboxState
from oversync_sa.client.validation import ManagedSchema, TableInfo
from oversync_sa.wire import Op, PushRequestRow, SyncKey, canonical_json

__all__ = [
    "Intent",
    "OutboxBundle",
    "OutboxRow",
    "OutboxState",
    "discard_outbox",
    "drop_outbox_rows",
    "freeze_outbox",
    "load_outbox",
    "mark_committed_remote",
    "outbox_intents",
    "requeue",
    "retarget_outbox",
]

_log = logging.getLogger("oversync_sa.client.push")

_decode_json: Final = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class Intent:
    """One local intent to (re)write into ``_sync_dirty_rows``; ``payload`` is local encoding."""

    schema: str
    table: str
    key_json: str
    op: Op
    base_row_version: int
    payload: str | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One frozen row. ``wire_payload`` is Go-canonical JSON text (``None`` for DELETE)."""

    row_ordinal: int
    schema: str
    table: str
    key_json: str
    wire_key: SyncKey
    op: Op
    base_row_version: int
    local_payload: str | None
    wire_payload: str | None

    def push_row(self) -> PushRequestRow:
        """The row as uploaded; the stored wire payload is sent verbatim (§5.1 allows it)."""
        row = PushRequestRow(
            schema=self.schema,
            table=self.table,
            key=dict(self.wire_key),
            op=self.op.value,
            base_row_version=self.base_row_version,
        )
        # DELETE keeps the model's own "absent" default, which is what omits the member.
        if self.wire_payload is not None:
            row.payload = msgspec.Raw(self.wire_payload)
        return row

    def intent(self) -> Intent:
        """The frozen intent, as it was before the freeze consumed its dirty row."""
        return Intent(
            self.schema, self.table, self.key_json, self.op, self.base_row_version,
            self.local_payload,
        )


@dataclass(frozen=True, slots=True)
class OutboxBundle:
    """The one outbound bundle with its durable bookkeeping."""

    state: OutboxState
    source_id: str
    source_bundle_id: int
    canonical_request_hash: str
    initialization_id: str
    remote_bundle_seq: int
    remote_bundle_hash: str
    rows: tuple[OutboxRow, ...]

    @property
    def row_count(self) -> int:
        return len(self.rows)


# --------------------------------------------------------------------------- requeue

_REQUEUE_SQL: Final = (
    "INSERT INTO _sync_dirty_rows (schema_name, table_name, key_json, op, base_row_version,"
    " payload, dirty_ordinal, updated_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
    " COALESCE((SELECT d.dirty_ordinal FROM _sync_dirty_rows AS d"
    "   WHERE d.schema_name = ?1 AND d.table_name = ?2 AND d.key_json = ?3),"
    f"  ({NEXT_DIRTY_ORDINAL_SQL})), {SYNC_TIMESTAMP_SQL})"
    " ON CONFLICT (schema_name, table_name, key_json) DO UPDATE SET"
    " op = excluded.op, base_row_version = excluded.base_row_version,"
    " payload = excluded.payload, updated_at = excluded.updated_at"
)


async def requeue(conn: AsyncConnection, intents: Iterable[Intent]) -> int:
    """Write ``intents`` into ``_sync_dirty_rows`` (§5.8); returns how many were written.

    An existing dirty row for the key keeps its ``dirty_ordinal`` (capture order) but takes the
    intent's op, base and payload; a new one is ordered after every existing dirty row.
    """
    params = [
        (i.schema, i.table, i.key_json, i.op.value, i.base_row_version, i.payload)
        for i in intents
    ]
    if params:
        await conn.exec_driver_sql(_REQUEUE_SQL, params)
    return len(params)


def outbox_intents(bundle: OutboxBundle, *, skip: Collection[int] = ()) -> list[Intent]:
    """The frozen intents of ``bundle`` in upload order, leaving out the ordinals in ``skip``."""
    return [row.intent() for row in bundle.rows if row.row_ordinal not in skip]


# --------------------------------------------------------------------------- load


async def load_outbox(conn: AsyncConnection) -> OutboxBundle | None:
    """The durable outbox, or ``None`` when there is none to resume.

    A singleton that is not ``none`` but has no rows is treated as empty (the next freeze
    overwrites it). Rows without a bundle, or rows of several bundles, fail closed.
    """
    singleton = await fetch_all(
        conn,
        "SELECT state, source_id, source_bundle_id, canonical_request_hash, initialization_id,"
        " remote_bundle_seq, remote_bundle_hash FROM _sync_outbox_bundle WHERE singleton_key = 1",
    )
    rows = await fetch_all(
        conn,
        "SELECT source_bundle_id, row_ordinal, schema_name, table_name, key_json, wire_key_json,"
        " op, base_row_version, local_payload, wire_payload FROM _sync_outbox_rows"
        " ORDER BY row_ordinal",
    )
    state = OutboxState(singleton[0][0]) if singleton else OutboxState.NONE
    if not rows:
        return None
    if state is OutboxState.NONE:
        raise OutboxStateError(
            f"{len(rows)} outbox rows exist but the outbox bundle state is 'none'"
        )
    bundle_ids = {int(r[0]) for r in rows}
    _, source_id, source_bundle_id, request_hash, init_id, remote_seq, remote_hash = singleton[0]
    if bundle_ids != {int(source_bundle_id)}:
        raise OutboxStateError(
            f"outbox rows belong to source bundles {sorted(bundle_ids)}, the outbox bundle"
            f" is {source_bundle_id}"
        )
    frozen = tuple(
        OutboxRow(
            row_ordinal=int(r[1]),
            schema=str(r[2]),
            table=str(r[3]),
            key_json=str(r[4]),
            wire_key=_decode_wire_key(str(r[5])),
            op=Op(r[6]),
            base_row_version=int(r[7]),
            local_payload=None if r[8] is None else str(r[8]),
            wire_payload=None if r[9] is None else str(r[9]),
        )
        for r in rows
    )
    if [r.row_ordinal for r in frozen] != list(range(len(frozen))):
        raise OutboxStateError("outbox row ordinals are not contiguous from 0")
    return OutboxBundle(
        state=state,
        source_id=str(source_id),
        source_bundle_id=int(source_bundle_id),
        canonical_request_hash=str(request_hash),
        initialization_id=str(init_id),
        remote_bundle_seq=int(remote_seq),
        remote_bundle_hash=str(remote_hash),
        rows=frozen,
    )


def _decode_wire_key(text: str) -> SyncKey:
    value: Any = _decode_json(text)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise OutboxStateError(f"outbox wire key {text!r} is not an object of strings")
    return value


# --------------------------------------------------------------------------- freeze


@dataclass(frozen=True, slots=True)
class _Candidate:
    info: TableInfo
    row: OutboxRow
    order: int


def _push_op(payload: str | None, row_state_deleted: int | None) -> Op | None:
    """The op actually pushed (§5.1 step 3); ``None`` for a no-op."""
    live = row_state_deleted is not None and not row_state_deleted
    if payload is not None:
        return Op.UPDATE if live else Op.INSERT
    return Op.DELETE if live else None


def _sort_key(candidate: _Candidate) -> tuple[int, int]:
    # Upserts parents first, then deletes children first; sorted() is stable, so the SQL order
    # (dirty_ordinal, table, key) breaks the remaining ties.
    if candidate.row.op is Op.DELETE:
        return (1, -candidate.order)
    return (0, candidate.order)


def _request_hash(rows: Sequence[OutboxRow]) -> str:
    """``canonical_request_hash``: SHA-256 of the canonical push-row list (§5.3), stored only."""
    document = [
        {
            "schema": r.schema,
            "table": r.table,
            "key": r.wire_key,
            "op": r.op.value,
            "base_row_version": r.base_row_version,
            **({} if r.wire_payload is None else {"payload": msgspec.Raw(r.wire_payload)}),
        }
        for r in rows
    ]
    return hashlib.sha256(canonical_json(document)).hexdigest()


async def freeze_outbox(
    conn: AsyncConnection,
    managed: ManagedSchema,
    *,
    source_id: str,
    initialization_id: str,
) -> OutboxBundle | None:
    """Move every dirty row into a new ``prepared`` outbox (§5.1); ``None`` if nothing to push.

    Runs in the caller's write transaction. No-op intents (inserted then deleted before any
    sync) are deleted even when nothing else is pending - Go leaves them behind, which then
    blocks every pull (§12.24) - so the caller must commit in both cases. Raises
    :class:`~oversync_sa.client.errors.KeyEncodingError` /
    :class:`~oversync_sa.client.errors.PayloadEncodingError` for rows that cannot be encoded;
    the caller rolls back and the dirty rows stay as they were.
    """
    source = await fetch_all(
        conn,
        "SELECT next_source_bundle_id FROM _sync_source_state WHERE source_id = ?",
        (source_id,),
    )
    if not source:
        raise OutboxStateError(f"source {source_id!r} has no _sync_source_state row")
    source_bundle_id = int(source[0][0])

    dirty = await fetch_all(
        conn,
        "SELECT d.schema_name, d.table_name, d.key_json, d.base_row_version, d.payload,"
        " r.deleted FROM _sync_dirty_rows AS d LEFT JOIN _sync_row_state AS r"
        " ON r.schema_name = d.schema_name AND r.table_name = d.table_name"
        " AND r.key_json = d.key_json"
        " ORDER BY d.dirty_ordinal, d.table_name, d.key_json",
    )
    candidates: list[_Candidate] = []
    no_ops: list[tuple[str, str, str]] = []
    for schema, table, key_json, base, payload, deleted in dirty:
        info = _managed_table(managed, str(schema), str(table))
        local_pk = local_pk_from_key_json(info, str(key_json))
        key = wire_key(info, local_pk)
        op = _push_op(payload, deleted)
        if op is None:
            no_ops.append((str(schema), str(table), str(key_json)))
            continue
        wire_payload = None
        if op is not Op.DELETE:
            wire = local_payload_to_wire(info, str(payload), key=local_pk)
            # Exact integers on the wire (Go rounds beyond 2^53, CLIENT.md §12.39).
            wire_payload = canonical_json(wire, exact_integers=True).decode("utf-8")
        row = OutboxRow(
            row_ordinal=-1,
            schema=str(schema),
            table=info.name,
            key_json=str(key_json),
            wire_key=key,
            op=op,
            base_row_version=int(base),
            local_payload=None if op is Op.DELETE else str(payload),
            wire_payload=wire_payload,
        )
        candidates.append(_Candidate(info, row, managed.order.get(info.name, len(managed.order))))

    if no_ops:
        await conn.exec_driver_sql(
            "DELETE FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ?"
            " AND key_json = ?",
            no_ops,
        )
        _log.debug("freeze dropped %d no-op dirty rows", len(no_ops))
    if not candidates:
        return None

    frozen = tuple(
        _with_ordinal(c.row, ordinal)
        for ordinal, c in enumerate(sorted(candidates, key=_sort_key))
    )
    bundle = OutboxBundle(
        state=OutboxState.PREPARED,
        source_id=source_id,
        source_bundle_id=source_bundle_id,
        canonical_request_hash=_request_hash(frozen),
        initialization_id=initialization_id,
        remote_bundle_seq=0,
        remote_bundle_hash="",
        rows=frozen,
    )
    await _write_bundle(conn, bundle)
    crash_point("client.outbox.freeze")
    _log.info(
        "froze %d rows into source bundle %d of source %s",
        bundle.row_count, source_bundle_id, source_id,
    )
    return bundle


def _with_ordinal(row: OutboxRow, ordinal: int) -> OutboxRow:
    return OutboxRow(
        ordinal, row.schema, row.table, row.key_json, row.wire_key, row.op,
        row.base_row_version, row.local_payload, row.wire_payload,
    )


def _managed_table(managed: ManagedSchema, schema: str, table: str) -> TableInfo:
    if schema != managed.schema:
        raise OutboxStateError(f"dirty row of schema {schema!r}, client schema {managed.schema!r}")
    try:
        info = managed.table(table)
    except KeyError:
        raise OutboxStateError(f"dirty row for unmanaged table {table!r}") from None
    if info.download_only:
        raise OutboxStateError(f"dirty row for download-only table {table!r}")
    return info


async def _insert_rows(
    conn: AsyncConnection, source_bundle_id: int, rows: Sequence[OutboxRow]
) -> None:
    await conn.exec_driver_sql(
        "INSERT INTO _sync_outbox_rows (source_bundle_id, row_ordinal, schema_name, table_name,"
        " key_json, wire_key_json, op, base_row_version, local_payload, wire_payload)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                source_bundle_id, r.row_ordinal, r.schema, r.table, r.key_json,
                canonical_json(r.wire_key).decode("utf-8"), r.op.value, r.base_row_version,
                r.local_payload, r.wire_payload,
            )
            for r in rows
        ],
    )


async def _write_bundle(conn: AsyncConnection, bundle: OutboxBundle) -> None:
    await conn.exec_driver_sql(
        "UPDATE _sync_outbox_bundle SET state = ?, source_id = ?, source_bundle_id = ?,"
        " canonical_request_hash = ?, row_count = ?, initialization_id = ?,"
        " remote_bundle_hash = '', remote_bundle_seq = 0 WHERE singleton_key = 1",
        (
            bundle.state.value, bundle.source_id, bundle.source_bundle_id,
            bundle.canonical_request_hash, bundle.row_count, bundle.initialization_id,
        ),
    )
    await _insert_rows(conn, bundle.source_bundle_id, bundle.rows)
    # Set-based: consume exactly the dirty rows that were just frozen.
    await conn.exec_driver_sql(
        "DELETE FROM _sync_dirty_rows WHERE EXISTS (SELECT 1 FROM _sync_outbox_rows AS o"
        " WHERE o.source_bundle_id = ? AND o.schema_name = _sync_dirty_rows.schema_name"
        " AND o.table_name = _sync_dirty_rows.table_name"
        " AND o.key_json = _sync_dirty_rows.key_json)",
        (bundle.source_bundle_id,),
    )


# --------------------------------------------------------------------------- state changes


async def mark_committed_remote(
    conn: AsyncConnection, bundle: OutboxBundle, *, bundle_seq: int, bundle_hash: str
) -> OutboxBundle:
    """Persist that the server committed ``bundle`` as ``bundle_seq`` (§5.2 step 6)."""
    await conn.exec_driver_sql(
        "UPDATE _sync_outbox_bundle SET state = ?, remote_bundle_seq = ?, remote_bundle_hash = ?,"
        " row_count = ? WHERE singleton_key = 1",
        (OutboxState.COMMITTED_REMOTE.value, bundle_seq, bundle_hash, bundle.row_count),
    )
    return OutboxBundle(
        state=OutboxState.COMMITTED_REMOTE,
        source_id=bundle.source_id,
        source_bundle_id=bundle.source_bundle_id,
        canonical_request_hash=bundle.canonical_request_hash,
        initialization_id=bundle.initialization_id,
        remote_bundle_seq=bundle_seq,
        remote_bundle_hash=bundle_hash,
        rows=bundle.rows,
    )


async def discard_outbox(conn: AsyncConnection, source_bundle_id: int) -> None:
    """Delete the frozen rows of ``source_bundle_id`` and reset the singleton to ``none``."""
    await conn.exec_driver_sql(
        "DELETE FROM _sync_outbox_rows WHERE source_bundle_id = ?", (source_bundle_id,)
    )
    await conn.exec_driver_sql(
        "UPDATE _sync_outbox_bundle SET state = 'none', source_id = '', source_bundle_id = 0,"
        " canonical_request_hash = '', row_count = 0, initialization_id = '',"
        " remote_bundle_hash = '', remote_bundle_seq = 0 WHERE singleton_key = 1"
    )


async def drop_outbox_rows(
    conn: AsyncConnection, bundle: OutboxBundle, ordinals: Collection[int]
) -> int:
    """Remove the frozen rows at ``ordinals``; returns how many rows the outbox keeps.

    Only for a bundle no server has accepted under its current tuple (the rotated rebuild
    re-addresses it as a new source's first bundle): the kept rows stay in upload order with
    their ops, bases and payloads, re-numbered from 0, and the bookkeeping hash follows them.
    Dropping every row discards the outbox. Dirty rows are not touched.
    """
    kept = tuple(
        _with_ordinal(row, ordinal)
        for ordinal, row in enumerate(r for r in bundle.rows if r.row_ordinal not in ordinals)
    )
    if len(kept) == bundle.row_count:
        return len(kept)
    if not kept:
        await discard_outbox(conn, bundle.source_bundle_id)
        return 0
    await conn.exec_driver_sql(
        "DELETE FROM _sync_outbox_rows WHERE source_bundle_id = ?", (bundle.source_bundle_id,)
    )
    await _insert_rows(conn, bundle.source_bundle_id, kept)
    await conn.exec_driver_sql(
        "UPDATE _sync_outbox_bundle SET canonical_request_hash = ?, row_count = ?"
        " WHERE singleton_key = 1",
        (_request_hash(kept), len(kept)),
    )
    return len(kept)


async def retarget_outbox(conn: AsyncConnection, source_id: str) -> None:
    """Re-address the frozen outbox as ``(source_id, 1)`` and make it ``prepared`` again.

    Only for a source that the server has never seen: the rows, their order, ops and bases are
    kept verbatim (§12.6), only the tuple they are pushed under changes. Any ``committed_remote``
    bookkeeping is dropped because it described another writer's bundle, not ours.
    """
    await conn.exec_driver_sql("UPDATE _sync_outbox_rows SET source_bundle_id = 1")
    await conn.exec_driver_sql(
        "UPDATE _sync_outbox_bundle SET state = ?, source_id = ?, source_bundle_id = 1,"
        " remote_bundle_hash = '', remote_bundle_seq = 0 WHERE singleton_key = 1",
        (OutboxState.PREPARED.value, source_id),
    )
