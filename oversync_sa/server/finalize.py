"""Bundle finalisation: staged trigger events -> one committed bundle (SERVER.md §3.3).

Runs at the end of the bundle transaction, after the business writes. The work is set-based:
one ``DELETE ... RETURNING`` both loads and clears this transaction's stage rows, normalisation
and payload canonicalisation happen in Python, and the rows reach ``bundle_rows`` and
``row_state`` through a single ``unnest`` statement, whatever the bundle size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.server.notify import notify_bundle_change
from oversync_sa.server.payload import wire_payload
from oversync_sa.server.runtime_info import SyncRuntime
from oversync_sa.wire.hashing import HashRow, bundle_hash
from oversync_sa.wire.keys import KeyKind, Op, key_text
from oversync_sa.wire.models import BundleRow

__all__ = [
    "CapturedEvent",
    "CommittedBundle",
    "NormalizedRow",
    "finalize_bundle",
    "normalize_events",
]

_log = logging.getLogger("oversync_sa.server.finalize")

_TAKE_STAGE_SQL: Final = text(
    "DELETE FROM sync.bundle_capture_stage "
    "WHERE txid = txid_current() AND user_pk = :user_pk "
    "RETURNING capture_ordinal, table_id, op_code, key_bytes, payload_db::text"
)
_ALLOCATE_SEQ_SQL: Final = text(
    "UPDATE sync.user_state SET next_bundle_seq = next_bundle_seq + 1 "
    "WHERE user_pk = :user_pk RETURNING next_bundle_seq - 1"
)
_INSERT_LOG_SQL: Final = text(
    "INSERT INTO sync.bundle_log (user_pk, bundle_seq, source_id, source_bundle_id, "
    "row_count, byte_count, bundle_hash, committed_at) "
    "VALUES (:user_pk, :bundle_seq, :source_id, :source_bundle_id, :row_count, :byte_count, "
    ":bundle_hash, now())"
)
# bundle_rows and row_state from the same arrays, sent once. row_ordinal is 1-based in storage.
_PERSIST_ROWS_SQL: Final = text(
    "WITH r AS ("
    " SELECT * FROM unnest(CAST(:table_ids AS integer[]), CAST(:key_bytes AS bytea[]),"
    "   CAST(:op_codes AS smallint[]), CAST(:payloads AS text[]))"
    "   WITH ORDINALITY AS r(table_id, key_bytes, op_code, payload, row_ordinal)),"
    " stored AS ("
    " INSERT INTO sync.bundle_rows (user_pk, bundle_seq, row_ordinal, table_id, key_bytes,"
    "   op_code, payload_wire)"
    " SELECT :user_pk, :bundle_seq, row_ordinal, table_id, key_bytes, op_code, payload::json"
    " FROM r)"
    " INSERT INTO sync.row_state (user_pk, table_id, key_bytes, bundle_seq, deleted)"
    " SELECT :user_pk, table_id, key_bytes, :bundle_seq, op_code = 3 FROM r"
    " ON CONFLICT (user_pk, table_id, key_bytes) DO UPDATE"
    " SET bundle_seq = EXCLUDED.bundle_seq, deleted = EXCLUDED.deleted"
)

_OP_DELETE: Final = Op.DELETE.code
_OP_INSERT: Final = Op.INSERT.code
_OP_UPDATE: Final = Op.UPDATE.code


@dataclass(frozen=True, slots=True)
class CapturedEvent:
    """One stage row written by the capture trigger; ``payload`` is ``jsonb`` text or None."""

    ordinal: int
    table_id: int
    op_code: int
    key_bytes: bytes
    payload: str | None


@dataclass(frozen=True, slots=True)
class NormalizedRow:
    """The net effect of a bundle on one logical row ``(table_id, key_bytes)``."""

    first_ordinal: int
    table_id: int
    key_bytes: bytes
    op_code: int
    payload: str | None


@dataclass(frozen=True, slots=True)
class CommittedBundle:
    """A bundle committed (or about to commit) by the running transaction.

    ``bundle_hash`` is lowercase hex; ``rows`` are wire rows in committed order (their 0-based
    position is the hash ``row_ordinal``).
    """

    bundle_seq: int
    source_id: str
    source_bundle_id: int
    row_count: int
    byte_count: int
    bundle_hash: str
    rows: tuple[BundleRow, ...]


@dataclass(slots=True)
class _Net:
    first_ordinal: int
    first_op: int
    last_op: int
    last_payload: str | None


def normalize_events(events: Iterable[CapturedEvent]) -> list[NormalizedRow]:
    """Collapse events per logical row, in first-touch order (§3.3 step 3, §11.7).

    ``events`` may come in any order; they are applied by ordinal. Created-then-deleted rows
    vanish, delete-then-reinsert of an existing row becomes one UPDATE, and a row first touched
    by INSERT stays an INSERT whatever updates follow. Ordinals are unique, so first-touch order
    needs no tie-break.
    """
    nets: dict[tuple[int, bytes], _Net] = {}
    for event in sorted(events, key=lambda e: e.ordinal):
        key = (event.table_id, event.key_bytes)
        net = nets.get(key)
        if net is None:
            nets[key] = _Net(event.ordinal, event.op_code, event.op_code, event.payload)
        else:
            net.last_op = event.op_code
            net.last_payload = event.payload
    rows: list[NormalizedRow] = []
    for (table_id, key_bytes), net in nets.items():
        if net.last_op == _OP_DELETE:
            if net.first_op == _OP_INSERT:
                continue
            op, payload = _OP_DELETE, None
        else:
            op = _OP_INSERT if net.first_op == _OP_INSERT else _OP_UPDATE
            payload = net.last_payload
        rows.append(NormalizedRow(net.first_ordinal, table_id, key_bytes, op, payload))
    return rows


async def _take_stage_events(conn: AsyncConnection, user_pk: int) -> list[CapturedEvent]:
    result = await conn.execute(_TAKE_STAGE_SQL, {"user_pk": user_pk})
    return [CapturedEvent(int(o), int(t), int(op), bytes(k), p) for o, t, op, k, p in result.all()]


def _wire_rows(
    rows: Sequence[NormalizedRow], runtime: SyncRuntime, bundle_seq: int
) -> tuple[list[BundleRow], list[bytes | None]]:
    """Wire rows plus their canonical payload bytes (``None`` for DELETE)."""
    wire: list[BundleRow] = []
    payloads: list[bytes | None] = []
    for row in rows:
        table = runtime.by_id[row.table_id]
        key = {table.key_column: key_text(KeyKind(table.key_kind), row.key_bytes)}
        op = Op.from_code(row.op_code)
        if row.payload is None:
            wire.append(
                BundleRow(
                    schema=table.schema, table=table.table, key=key, op=op, row_version=bundle_seq
                )
            )
            payloads.append(None)
            continue
        payload = wire_payload(row.payload, _column_types(runtime, table.name))
        wire.append(
            BundleRow(
                schema=table.schema,
                table=table.table,
                key=key,
                op=op,
                row_version=bundle_seq,
                payload=msgspec.Raw(payload),
            )
        )
        payloads.append(payload)
    return wire, payloads


def _column_types(runtime: SyncRuntime, name: str) -> Mapping[str, str]:
    return runtime.column_types.get(name, {})


async def finalize_bundle(
    conn: AsyncConnection,
    runtime: SyncRuntime,
    *,
    user_pk: int,
    source_id: str,
    source_bundle_id: int,
    notify_channel: str | None = None,
) -> CommittedBundle | None:
    """Turn this transaction's captured events into one committed bundle, or ``None``.

    ``None`` means nothing visible was captured (no events, or all of them normalised away);
    the stage rows are cleared either way and no ``bundle_seq`` is consumed. With
    ``notify_channel`` set, a bundle-change NOTIFY is queued in the same transaction. The caller
    activates the source and applies retention afterwards (§3.3 step 13).
    """
    rows = normalize_events(await _take_stage_events(conn, user_pk))
    if not rows:
        return None

    bundle_seq = int((await conn.execute(_ALLOCATE_SEQ_SQL, {"user_pk": user_pk})).scalar_one())
    wire, payloads = _wire_rows(rows, runtime, bundle_seq)
    digest, byte_count = bundle_hash(
        HashRow(r.schema, r.table, r.key, r.op, r.row_version, p)
        for r, p in zip(wire, payloads, strict=True)
    )
    await conn.execute(
        _INSERT_LOG_SQL,
        {
            "user_pk": user_pk,
            "bundle_seq": bundle_seq,
            "source_id": source_id,
            "source_bundle_id": source_bundle_id,
            "row_count": len(wire),
            "byte_count": byte_count,
            "bundle_hash": bytes.fromhex(digest),
        },
    )
    if notify_channel is not None:
        await notify_bundle_change(
            conn,
            notify_channel,
            user_pk=user_pk,
            bundle_seq=bundle_seq,
            source_id=source_id,
            source_bundle_id=source_bundle_id,
        )
    await conn.execute(
        _PERSIST_ROWS_SQL,
        {
            "user_pk": user_pk,
            "bundle_seq": bundle_seq,
            "table_ids": [r.table_id for r in rows],
            "key_bytes": [r.key_bytes for r in rows],
            "op_codes": [r.op_code for r in rows],
            "payloads": [None if p is None else p.decode("utf-8") for p in payloads],
        },
    )
    _log.debug(
        "finalised bundle user_pk=%d seq=%d rows=%d bytes=%d",
        user_pk,
        bundle_seq,
        len(wire),
        byte_count,
    )
    return CommittedBundle(
        bundle_seq=bundle_seq,
        source_id=source_id,
        source_bundle_id=source_bundle_id,
        row_count=len(wire),
        byte_count=byte_count,
        bundle_hash=digest,
        rows=tuple(wire),
    )
