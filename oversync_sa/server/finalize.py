"""Bundle finalisation: staged trigger events -> one committed bundle (SERVER.md §3.3).

Runs at the end of the bundle transaction, after the business writes, in two round trips
whatever the bundle size (the bundle-change NOTIFY rides on the second):

1. one statement takes this transaction's stage rows (``DELETE ... RETURNING``), normalises
   them per logical row in SQL (§3.3 step 3), allocates ``bundle_seq`` only if a row survived,
   and returns the surviving rows in first-touch order with their wire key text;
2. after Python has canonicalised the payloads and hashed the bundle, one statement writes
   ``bundle_log``, ``bundle_rows`` and ``row_state`` from arrays (``unnest``).

Only the Go-canonical payload rendering (Appendix A: float64 numbers, code-point key order, Go
string escapes) and the SHA-256 stay in Python. :func:`normalize_events` is the same
normalisation in Python, kept as the executable reference the SQL is tested against.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.server.notify import bundle_change_payload
from oversync_sa.server.payload import wire_payload
from oversync_sa.server.read_support import driver_connection, key_text_sql, uuid_table_ids
from oversync_sa.server.retention import advance_floor_ctes
from oversync_sa.server.runtime_info import RuntimeTable, SyncRuntime
from oversync_sa.server.sources import load_source_state, retired_error
from oversync_sa.wire.canonical import float64_canonical
from oversync_sa.wire.hashing import HashRow, bundle_hash
from oversync_sa.wire.keys import Op
from oversync_sa.wire.models import BundleRow

__all__ = [
    "BundleSequencing",
    "CapturedEvent",
    "CommittedBundle",
    "NormalizedRow",
    "finalize_bundle",
    "normalize_events",
]

_log = logging.getLogger("oversync_sa.server.finalize")

# $1 user_pk, $2 uuid table ids. ``ev`` deletes every stage row of this transaction (also when
# all of them normalise away); ``net`` keeps, per logical row, the last event plus the first
# event's op and ordinal; ``seq`` consumes a bundle_seq only when a row survives. Every result
# row repeats the allocated seq (NULL when nothing survived, then no row comes back anyway).
_TAKE_STAGE_SQL: Final = (
    "WITH ev AS ("
    " DELETE FROM sync.bundle_capture_stage WHERE txid = txid_current() AND user_pk = $1"
    " RETURNING capture_ordinal, table_id, op_code, key_bytes, payload_db),"
    " net AS ("
    " SELECT DISTINCT ON (table_id, key_bytes) table_id, key_bytes, op_code AS last_op,"
    "  payload_db, first_value(op_code) OVER w AS first_op,"
    "  first_value(capture_ordinal) OVER w AS first_ordinal"
    " FROM ev WINDOW w AS (PARTITION BY table_id, key_bytes ORDER BY capture_ordinal)"
    " ORDER BY table_id, key_bytes, capture_ordinal DESC),"
    " kept AS (SELECT * FROM net WHERE NOT (last_op = 3 AND first_op = 1)),"
    " seq AS ("
    " UPDATE sync.user_state SET next_bundle_seq = next_bundle_seq + 1"
    " WHERE user_pk = $1 AND EXISTS (SELECT 1 FROM kept) RETURNING next_bundle_seq - 1 AS s)"
    " SELECT k.table_id, k.key_bytes, "
    + key_text_sql("k.table_id", "k.key_bytes", "$2")
    + ", CASE WHEN k.last_op = 3 THEN 3 WHEN k.first_op = 1 THEN 1 ELSE 2 END,"
    " CASE WHEN k.last_op = 3 THEN NULL ELSE k.payload_db::text END, (SELECT s FROM seq)"
    " FROM kept k ORDER BY k.first_ordinal, k.table_id, k.key_bytes"
)
# bundle_log, bundle_rows and row_state in one statement. The bundle_rows -> bundle_log foreign
# key is checked at the end of the statement, when the log row exists. row_ordinal is 1-based.
_PERSIST_HEAD: Final = (
    "WITH log AS ("
    " INSERT INTO sync.bundle_log (user_pk, bundle_seq, source_id, source_bundle_id,"
    " row_count, byte_count, bundle_hash, committed_at)"
)
_PERSIST_TAIL: Final = (
    " r AS MATERIALIZED ("
    " SELECT * FROM unnest($8::integer[], $9::bytea[], $10::smallint[], $11::text[])"
    "  WITH ORDINALITY AS r(table_id, key_bytes, op_code, payload, row_ordinal)),"
    " stored AS ("
    " INSERT INTO sync.bundle_rows (user_pk, bundle_seq, row_ordinal, table_id, key_bytes,"
    "  op_code, payload_wire)"
    " SELECT $1, $2, row_ordinal, table_id, key_bytes, op_code, payload::json FROM r)"
    " INSERT INTO sync.row_state (user_pk, table_id, key_bytes, bundle_seq, deleted)"
    " SELECT $1, table_id, key_bytes, $2, op_code = 3 FROM r"
    " ON CONFLICT (user_pk, table_id, key_bytes) DO UPDATE"
    " SET bundle_seq = EXCLUDED.bundle_seq, deleted = EXCLUDED.deleted"
)
# Source activation (§7.2): insert or advance the watermark (GREATEST keeps it monotonic);
# no row comes back for a retired source, which the caller then reports.
_ACTIVATE_CTE: Final = (
    " src AS (INSERT INTO sync.source_state AS s (user_pk, source_id, state,"
    " max_committed_source_bundle_id, replaced_by_source_id, retirement_reason)"
    " VALUES ($1, $3, 'active', $4, '', '') ON CONFLICT (user_pk, source_id) DO UPDATE"
    " SET state = 'active', max_committed_source_bundle_id ="
    " GREATEST(s.max_committed_source_bundle_id, EXCLUDED.max_committed_source_bundle_id),"
    " replaced_by_source_id = '', retirement_reason = '' WHERE s.state <> 'retired'"
    " RETURNING 1),"
)
@lru_cache(maxsize=4)
def _persist_sql(notify: bool, sequenced: bool) -> str:
    """The persist statement; optional parts ride on it to save their round trips.

    ``notify`` adds ``$12`` channel and ``$13`` payload: the NOTIFY is queued by the log
    insert's one-row source, which a data-modifying CTE always runs exactly once. ``sequenced``
    adds source activation and retention (window and batch are the next two parameters) and
    makes the statement return one row: how many source rows the activation wrote (0: retired).
    """
    head = _PERSIST_HEAD + (
        " SELECT $1, $2, $3, $4, $5, $6, $7, now() FROM (SELECT pg_notify($12, $13)) AS n),"
        if notify
        else " VALUES ($1, $2, $3, $4, $5, $6, $7, now())),"
    )
    if not sequenced:
        return head + _PERSIST_TAIL
    first = 14 if notify else 12
    stored, state = _PERSIST_TAIL.split(" INSERT INTO sync.row_state", 1)
    return (
        head
        + stored
        + ", state AS (INSERT INTO sync.row_state"
        + state
        + "),"
        + _ACTIVATE_CTE
        # Retention (§7.1): the bundle_log rows it deletes are at or below the new floor, so
        # never the one this statement inserts (its seq is above the head minus the window).
        + advance_floor_ctes("$1", f"${first}::bigint", f"${first + 1}::bigint")
        + " SELECT count(*) FROM src"
    )


@dataclass(frozen=True, slots=True)
class BundleSequencing:
    """The end of §3.3 step 13 run with the bundle: activate the source, apply retention.

    ``user_id`` names the scope in a ``source_retired`` error; ``window`` and ``batch`` are
    the retention settings (both positive).
    """

    user_id: str
    window: int
    batch: int

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

    The reference of the normalisation :func:`finalize_bundle` runs in SQL.

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


@dataclass(frozen=True, slots=True)
class _TablePlan:
    """Per-table constants of the row loop, computed once per bundle."""

    table: RuntimeTable
    column_types: Mapping[str, str]


def _plans(runtime: SyncRuntime) -> dict[int, _TablePlan]:
    return {
        t.table_id: _TablePlan(t, runtime.column_types.get(t.name, {})) for t in runtime.tables
    }


_OPS: Final = {op.code: op for op in Op}


async def _load_stage(raw: Any, user_pk: int, runtime: SyncRuntime) -> list[Any]:
    """Round trip 1: take, normalise and order this transaction's events (see the SQL)."""
    return list(await raw.fetch(_TAKE_STAGE_SQL, user_pk, uuid_table_ids(runtime.tables)))


def _build_bundle(
    records: Sequence[Any], runtime: SyncRuntime, bundle_seq: int
) -> tuple[list[BundleRow], list[str | None], str, int]:
    """Wire rows, stored payload texts (``None`` for DELETE), hash and byte_count.

    Each payload is Go-canonicalised and wire-canonicalised exactly once (§3.3 step 1, §3.4);
    the hash then copies those canonical bytes verbatim.
    """
    plans = _plans(runtime)
    wire: list[BundleRow] = []
    stored: list[str | None] = []
    hashed: list[HashRow] = []
    for table_id, _key_bytes, key, op_code, payload_db, _seq in records:
        plan = plans[table_id]
        table = plan.table
        op = _OPS[op_code]
        key_obj = {table.key_column: key}
        if payload_db is None:
            wire.append(
                BundleRow(
                    schema=table.schema, table=table.table, key=key_obj, op=op,
                    row_version=bundle_seq,
                )
            )
            stored.append(None)
            hashed.append(HashRow(table.schema, table.table, key_obj, op, bundle_seq, None))
            continue
        payload = wire_payload(payload_db, plan.column_types)
        wire.append(
            BundleRow(
                schema=table.schema, table=table.table, key=key_obj, op=op,
                row_version=bundle_seq, payload=msgspec.Raw(payload),
            )
        )
        stored.append(payload.decode("utf-8"))
        # A Go client hashes its float64 decoding of the payload, not the exact integers.
        hashed.append(
            HashRow(table.schema, table.table, key_obj, op, bundle_seq, float64_canonical(payload))
        )
    digest, byte_count = bundle_hash(hashed)
    return wire, stored, digest, byte_count


async def finalize_bundle(
    conn: AsyncConnection,
    runtime: SyncRuntime,
    *,
    user_pk: int,
    source_id: str,
    source_bundle_id: int,
    notify_channel: str | None = None,
    sequencing: BundleSequencing | None = None,
) -> CommittedBundle | None:
    """Turn this transaction's captured events into one committed bundle, or ``None``.

    ``None`` means nothing visible was captured (no events, or all of them normalised away);
    the stage rows are cleared either way and no ``bundle_seq`` is consumed. With
    ``notify_channel`` set, a bundle-change NOTIFY is queued in the same transaction. With
    ``sequencing``, the source is activated and retention applied in the same statement
    (§3.3 step 13; a retired source raises :class:`SourceRetiredError`); without it the caller
    does both afterwards.
    """
    if sequencing is not None and (sequencing.window <= 0 or sequencing.batch <= 0):
        raise ValueError("retention window and batch must be positive")
    # The business writes already ran on conn, so its transaction is open on the driver.
    raw = await driver_connection(conn)
    records = await _load_stage(raw, user_pk, runtime)
    if not records:
        return None
    bundle_seq = int(records[0][5])
    wire, stored, digest, byte_count = _build_bundle(records, runtime, bundle_seq)
    notify: tuple[str, ...] = ()
    if notify_channel is not None:
        notify = (
            notify_channel,
            bundle_change_payload(
                user_pk=user_pk,
                bundle_seq=bundle_seq,
                source_id=source_id,
                source_bundle_id=source_bundle_id,
            ),
        )
    retention = () if sequencing is None else (sequencing.window, sequencing.batch)
    activated = await raw.fetchval(
        _persist_sql(bool(notify), sequencing is not None),
        user_pk,
        bundle_seq,
        source_id,
        source_bundle_id,
        len(wire),
        byte_count,
        bytes.fromhex(digest),
        [r[0] for r in records],
        [r[1] for r in records],
        [r[3] for r in records],
        stored,
        *notify,
        *retention,
    )
    if sequencing is not None and not activated:
        record = await load_source_state(conn, user_pk, source_id)
        if record is None:  # pragma: no cover - the upsert either wrote a row or hit a retired one
            raise AssertionError(f"source_state row for {source_id} vanished during activation")
        raise retired_error(sequencing.user_id, record)
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
