"""Staging, verifying and authoritatively replaying our own committed bundle (CLIENT.md §5.4-5.5).

After the server commits the outbox, the client fetches the committed rows back (the server may
have normalised payloads), checks them against the server's ``bundle_hash`` and replays them as
authoritative state in one SQLite transaction, with capture suppressed. Local writes made since
the freeze are not lost: every uploaded key is compared with its *live row* and its *current
dirty row*, and where the user has moved on the committed row only updates ``_sync_row_state``
while the newer local intent is requeued on top of the committed version (the rebase of §5.5).

The module also owns the small authoritative-write primitives (the apply-mode transaction and
``_sync_row_state`` upserts) that conflict resolution shares.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from itertools import groupby
from typing import Any, Final

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa._crashpoints import crash_point
from oversync_sa.client.encoding import (
    delete_sql,
    key_json_sql,
    local_key_json,
    local_pk_from_key_json,
    local_pk_from_wire_key,
    local_pk_to_sql,
    payload_json_sql,
    quote_identifier,
    upsert_sql,
    wire_key,
    wire_payload_to_values,
)
from oversync_sa.client.errors import (
    BundleHashMismatchError,
    ForeignCommittedBundleError,
    OutboxStateError,
    ProtocolViolationError,
)
from oversync_sa.client.local_schema import SYNC_TIMESTAMP_SQL, fetch_all
from oversync_sa.client.outbox import Intent, OutboxBundle, OutboxRow, discard_outbox, requeue
from oversync_sa.client.runtime import ClientRuntime
from oversync_sa.client.triggers import set_apply_mode
from oversync_sa.client.validation import ManagedSchema, TableInfo
from oversync_sa.wire import (
    CommittedBundleRowsResponse,
    HashRow,
    Op,
    bundle_hash,
    canonical_json,
    canonicalize,
)

__all__ = [
    "CommittedBundle",
    "ReplayResult",
    "RowStateWrite",
    "authoritative_transaction",
    "delete_row_states",
    "payloads_equal",
    "replay_committed_bundle",
    "replay_equivalent",
    "reset_push_stage",
    "stage_committed_page",
    "stored_as",
    "verify_staged_bundle",
    "write_row_states",
]

_log = logging.getLogger("oversync_sa.client.push")

_decode_json: Final = msgspec.json.Decoder().decode
#: Bound parameters per ``IN (...)`` lookup; well below SQLite's default variable limit.
_IN_CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class CommittedBundle:
    """The server's record of our committed bundle (commit reply or ``already_committed``)."""

    bundle_seq: int
    source_id: str
    source_bundle_id: int
    row_count: int
    bundle_hash: str


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did: rows applied authoritatively and local intents requeued on top."""

    applied: int
    requeued: int
    checkpoint_advanced: bool


@dataclass(frozen=True, slots=True)
class RowStateWrite:
    """One ``_sync_row_state`` row to upsert (schema is the client's)."""

    table: str
    key_json: str
    row_version: int
    deleted: bool


# --------------------------------------------------------------------------- primitives


@asynccontextmanager
async def authoritative_transaction(runtime: ClientRuntime) -> AsyncIterator[AsyncConnection]:
    """One transaction for the client's own writes to managed tables (§3.3).

    Foreign keys are deferred (rows arrive in bundle order, not FK order) and ``apply_mode``
    is 1 so neither capture nor guards fire; it is set back to 0 as the last statement. On an
    error the rollback also discards ``apply_mode = 1``.
    """
    async with runtime.transaction() as conn:
        await conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        await set_apply_mode(conn, True)
        yield conn
        await set_apply_mode(conn, False)


async def write_row_states(
    conn: AsyncConnection, schema: str, writes: Iterable[RowStateWrite]
) -> None:
    """Upsert authoritative row versions / tombstones (one ``executemany``)."""
    params = [(schema, w.table, w.key_json, w.row_version, int(w.deleted)) for w in writes]
    if not params:
        return
    await conn.exec_driver_sql(
        "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version, deleted,"
        f" updated_at) VALUES (?, ?, ?, ?, ?, {SYNC_TIMESTAMP_SQL})"
        " ON CONFLICT (schema_name, table_name, key_json) DO UPDATE SET"
        " row_version = excluded.row_version, deleted = excluded.deleted,"
        " updated_at = excluded.updated_at",
        params,
    )


async def delete_row_states(
    conn: AsyncConnection, schema: str, keys: Iterable[tuple[str, str]]
) -> None:
    """Forget the row state of ``(table, key_json)`` keys (the key becomes "absent")."""
    params = [(schema, table, key_json) for table, key_json in keys]
    if params:
        await conn.exec_driver_sql(
            "DELETE FROM _sync_row_state WHERE schema_name = ? AND table_name = ?"
            " AND key_json = ?",
            params,
        )


def payloads_equal(left: str | bytes | None, right: str | bytes | None) -> bool:
    """Canonical payload equality of §5.3 (``1`` = ``1.0``, member order irrelevant).

    Integers compare exactly: under Go's float64 equality an edit of a value beyond 2^53 by
    less than its float64 spacing would look unchanged and be overwritten (CLIENT.md §12.39).
    """
    if left is None or right is None:
        return left is None and right is None
    return canonicalize(left, exact_integers=True) == canonicalize(right, exact_integers=True)


async def live_payloads(
    conn: AsyncConnection, info: TableInfo, key_jsons: Iterable[str]
) -> dict[str, str]:
    """``key_json -> local payload`` of the live rows among ``key_jsons`` (absent ones omitted).

    Serialised in SQLite with the triggers' own expressions, so a row compares equal to what
    capture stored for it; looked up in chunks instead of one query per key.
    """
    wanted = list(dict.fromkeys(key_jsons))
    table = quote_identifier(info.name)
    found: dict[str, str] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        values = [local_pk_to_sql(info, local_pk_from_key_json(info, k)) for k in chunk]
        placeholders = ", ".join("?" for _ in values)
        rows = await fetch_all(
            conn,
            f"SELECT {key_json_sql(info, table)}, {payload_json_sql(info, table)} FROM {table}"
            f" WHERE {quote_identifier(info.key_column)} IN ({placeholders})",
            values,
        )
        found.update((str(k), str(p)) for k, p in rows)
    return found


# --------------------------------------------------------------------------- staging (§5.4)


async def reset_push_stage(conn: AsyncConnection) -> None:
    """Drop every staged committed row (a stale partial fetch is never resumed)."""
    await conn.exec_driver_sql("DELETE FROM _sync_push_stage")


def _check_page(
    commit: CommittedBundle, page: CommittedBundleRowsResponse, after: int
) -> None:
    def fail(message: str) -> ProtocolViolationError:
        return ProtocolViolationError(
            "committed_bundle_rows", f"bundle {commit.bundle_seq}: {message}"
        )

    for name in ("bundle_seq", "source_id", "source_bundle_id", "row_count", "bundle_hash"):
        if getattr(page, name) != getattr(commit, name):
            raise fail(f"page {name} {getattr(page, name)!r} != {getattr(commit, name)!r}")
    if page.next_row_ordinal != after + len(page.rows):
        raise fail(
            f"next_row_ordinal {page.next_row_ordinal} after {after} with {len(page.rows)} rows"
        )
    if page.has_more and not page.rows:
        raise fail("has_more with an empty page")
    for row in page.rows:
        if not row.schema or not row.table or not row.key or row.row_version <= 0:
            raise fail(f"invalid row {row.schema}.{row.table} {row.key!r}")
        if row.op is not Op.DELETE and len(row.payload) == 0:
            raise fail(f"{row.op} row of {row.table} without payload")


async def stage_committed_page(
    conn: AsyncConnection,
    managed: ManagedSchema,
    commit: CommittedBundle,
    page: CommittedBundleRowsResponse,
    *,
    after: int,
) -> None:
    """Validate one page fetched after ordinal ``after`` (-1 first) and stage it (§5.4 3-4).

    Keys are stored in local encoding; payloads as the raw JSON text received (NULL for DELETE).
    """
    _check_page(commit, page, after)
    params: list[tuple[Any, ...]] = []
    for index, row in enumerate(page.rows):
        if row.schema != managed.schema:
            raise ProtocolViolationError(
                "committed_bundle_rows",
                f"row schema {row.schema!r} is not the client schema {managed.schema!r}",
            )
        info = _table(managed, row.table)
        key_json = local_key_json(info, local_pk_from_wire_key(info, row.key))
        payload = None if row.op is Op.DELETE else bytes(row.payload).decode("utf-8")
        params.append(
            (
                commit.bundle_seq, after + 1 + index, row.schema, info.name, key_json,
                row.op.value, row.row_version, payload,
            )
        )
    if params:
        await conn.exec_driver_sql(
            "INSERT INTO _sync_push_stage (bundle_seq, row_ordinal, schema_name, table_name,"
            " key_json, op, row_version, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            params,
        )


def _table(managed: ManagedSchema, name: str) -> TableInfo:
    try:
        return managed.table(name)
    except KeyError:
        raise ProtocolViolationError(
            "committed_bundle_rows", f"row of unmanaged table {name!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class _StagedRow:
    ordinal: int
    info: TableInfo
    key_json: str
    op: Op
    row_version: int
    payload: str | None

    @property
    def local_pk(self) -> str:
        return local_pk_from_key_json(self.info, self.key_json)


async def _load_stage(
    conn: AsyncConnection, managed: ManagedSchema, bundle_seq: int
) -> list[_StagedRow]:
    rows = await fetch_all(
        conn,
        "SELECT row_ordinal, table_name, key_json, op, row_version, payload"
        " FROM _sync_push_stage WHERE bundle_seq = ? ORDER BY row_ordinal",
        (bundle_seq,),
    )
    return [
        _StagedRow(
            int(r[0]), _table(managed, str(r[1])), str(r[2]), Op(r[3]), int(r[4]),
            None if r[5] is None else str(r[5]),
        )
        for r in rows
    ]


async def verify_staged_bundle(
    conn: AsyncConnection, managed: ManagedSchema, commit: CommittedBundle
) -> None:
    """Check count, ordinals and ``bundle_hash`` of the staged bundle (§5.4 step 6).

    The hash is recomputed from what is stored locally - wire keys rebuilt from ``key_json`` -
    so it also proves the staging did not alter anything.
    """
    staged = await _load_stage(conn, managed, commit.bundle_seq)
    if len(staged) != commit.row_count or any(r.ordinal != i for i, r in enumerate(staged)):
        raise ProtocolViolationError(
            "committed_bundle_rows",
            f"bundle {commit.bundle_seq}: staged {len(staged)} rows, expected {commit.row_count}",
        )
    digest, _ = bundle_hash(
        (
            HashRow(
                managed.schema, r.info.name, wire_key(r.info, r.local_pk), r.op.value,
                r.row_version, None if r.payload is None else r.payload.encode("utf-8"),
            )
            for r in staged
        ),
        payloads_canonical=False,
    )
    if digest != commit.bundle_hash:
        raise BundleHashMismatchError(commit.bundle_seq, commit.bundle_hash, digest)


# --------------------------------------------------------------------------- replay (§5.5)


@dataclass(frozen=True, slots=True)
class _Rebase:
    """Keep the local change: only row state moves, and this intent is requeued."""

    op: Op
    payload: str | None


async def _rebase_decisions(
    conn: AsyncConnection, managed: ManagedSchema, bundle: OutboxBundle
) -> dict[tuple[str, str], _Rebase | None]:
    """Per uploaded key: ``None`` to apply the committed row, or the local intent to keep."""
    dirty = {
        (str(t), str(k)): (Op(op), None if p is None else str(p))
        for t, k, op, p in await fetch_all(
            conn,
            "SELECT d.table_name, d.key_json, d.op, d.payload FROM _sync_dirty_rows AS d"
            " JOIN _sync_outbox_rows AS o ON o.schema_name = d.schema_name"
            " AND o.table_name = d.table_name AND o.key_json = d.key_json"
            " WHERE o.source_bundle_id = ?",
            (bundle.source_bundle_id,),
        )
    }
    live: dict[tuple[str, str], str] = {}
    by_table = sorted(bundle.rows, key=lambda r: r.table)
    for table, rows in groupby(by_table, key=lambda r: r.table):
        info = managed.table(table)
        found = await live_payloads(conn, info, (r.key_json for r in rows))
        live.update(((table, k), p) for k, p in found.items())

    decisions: dict[tuple[str, str], _Rebase | None] = {}
    for row in bundle.rows:
        key = (row.table, row.key_json)
        decisions[key] = _decide(row, live.get(key), dirty.get(key))
    return decisions


def _decide(
    uploaded: OutboxRow, live: str | None, dirty: tuple[Op, str | None] | None
) -> _Rebase | None:
    if uploaded.op is Op.DELETE:
        return _Rebase(Op.INSERT, live) if live is not None else None
    if live is None:
        return _Rebase(Op.DELETE, None)
    dirty_matches = dirty is not None and (
        dirty[0] is uploaded.op and payloads_equal(dirty[1], uploaded.local_payload)
    )
    if dirty is not None and not dirty_matches:
        return _Rebase(Op.UPDATE, live)
    if not payloads_equal(live, uploaded.local_payload):
        return _Rebase(Op.UPDATE, live)
    return None


async def replay_committed_bundle(
    conn: AsyncConnection,
    managed: ManagedSchema,
    bundle: OutboxBundle,
    commit: CommittedBundle,
    *,
    already_committed: bool,
) -> ReplayResult:
    """Replay the staged committed bundle over local state (§5.5); caller's authoritative tx.

    ``conn`` must come from :func:`authoritative_transaction`. With ``already_committed`` the
    staged rows must first prove to be our frozen outbox (a lost commit reply must not replay
    some other bundle as ours). Ends with the outbox discarded, the stage of this bundle
    deleted, ``next_source_bundle_id`` past the committed id and the checkpoint moved only if the
    bundle is exactly the next one.
    """
    staged = await _load_stage(conn, managed, commit.bundle_seq)
    if len(staged) != commit.row_count:
        raise OutboxStateError(
            f"bundle {commit.bundle_seq}: {len(staged)} staged rows, expected {commit.row_count}"
        )
    if already_committed:
        _prove_outbox(managed, bundle, staged)
    decisions = await _rebase_decisions(conn, managed, bundle)

    row_states: list[RowStateWrite] = []
    consumed: list[tuple[str, str, str]] = []
    intents: list[Intent] = []
    applied = 0
    # Runs of one table and one action become one executemany; the bundle order is kept.
    for (info, op), run in groupby(
        (r for r in staged if decisions.get((r.info.name, r.key_json)) is None),
        key=lambda r: (r.info, r.op),
    ):
        batch = list(run)
        if op is Op.DELETE:
            params = [(local_pk_to_sql(info, r.local_pk),) for r in batch]
            await conn.exec_driver_sql(delete_sql(info), params)
        else:
            await conn.exec_driver_sql(
                upsert_sql(info),
                [wire_payload_to_values(info, r.payload or "", key=r.local_pk) for r in batch],
            )
        applied += len(batch)
    for r in staged:
        key = (r.info.name, r.key_json)
        row_states.append(RowStateWrite(r.info.name, r.key_json, r.row_version, r.op is Op.DELETE))
        if key not in decisions:
            continue  # not ours (e.g. a server-side cascade): dirty rows are left alone
        decision = decisions[key]
        if decision is None:
            consumed.append((managed.schema, r.info.name, r.key_json))
        else:
            intents.append(
                Intent(managed.schema, r.info.name, r.key_json, decision.op, r.row_version,
                       decision.payload)
            )
    await write_row_states(conn, managed.schema, row_states)
    crash_point("client.replay.applied")
    if consumed:
        await conn.exec_driver_sql(
            "DELETE FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ?"
            " AND key_json = ?",
            consumed,
        )
    requeued = await requeue(conn, intents)

    advanced = await conn.exec_driver_sql(
        "UPDATE _sync_attachment_state SET last_bundle_seq_seen = ?"
        " WHERE singleton_key = 1 AND last_bundle_seq_seen = ?",
        (commit.bundle_seq, commit.bundle_seq - 1),
    )
    await conn.exec_driver_sql(
        "UPDATE _sync_source_state SET next_source_bundle_id = max(next_source_bundle_id, ?)"
        " WHERE source_id = ?",
        (commit.source_bundle_id + 1, commit.source_id),
    )
    await discard_outbox(conn, bundle.source_bundle_id)
    await conn.exec_driver_sql(
        "DELETE FROM _sync_push_stage WHERE bundle_seq = ?", (commit.bundle_seq,)
    )
    result = ReplayResult(applied, requeued, advanced.rowcount == 1)
    _log.info(
        "replayed bundle %d: %d rows applied, %d local intents requeued",
        commit.bundle_seq, applied, requeued,
        extra={
            "source_id": commit.source_id,
            "source_bundle_id": commit.source_bundle_id,
            "bundle_seq": commit.bundle_seq,
            "rows": applied,
        },
    )
    return result


# --------------------------------------------------------------------------- outbox proof


def _prove_outbox(
    managed: ManagedSchema, bundle: OutboxBundle, staged: Sequence[_StagedRow]
) -> None:
    """Fail unless the committed rows are our frozen rows (§5.5 step 4)."""

    def fail(message: str) -> ForeignCommittedBundleError:
        return ForeignCommittedBundleError(bundle.source_id, bundle.source_bundle_id, message)

    if len(staged) != bundle.row_count:
        raise fail(f"{len(staged)} committed rows, {bundle.row_count} frozen")
    ours = sorted(
        (
            (r.schema, r.table, r.op.value, canonical_json(r.wire_key), r.wire_payload)
            for r in bundle.rows
        ),
        key=_proof_order,
    )
    theirs = sorted(
        (
            (
                managed.schema, r.info.name, r.op.value,
                canonical_json(wire_key(r.info, r.local_pk)), r.payload,
            )
            for r in staged
        ),
        key=_proof_order,
    )
    for mine, committed in zip(ours, theirs, strict=True):
        if mine[:4] != committed[:4]:
            raise fail(f"row {mine[:4]!r} != {committed[:4]!r}")
        if (mine[4] is None) != (committed[4] is None):
            raise fail(f"payload presence differs for {mine[:4]!r}")
        if mine[4] is not None and committed[4] is not None and not _stored_as(
            _decode_json(mine[4]), _decode_json(committed[4])
        ):
            raise fail(f"payload differs for {mine[:4]!r}")


def _proof_order(row: tuple[str, str, str, bytes, str | None]) -> tuple[Any, ...]:
    return (*row[:4], row[4] is not None, row[4] or "")


_INSTANT: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))"
)


def _instant(text: str) -> tuple[datetime, int] | None:
    """RFC 3339 text as ``(UTC second, nanoseconds)``; ``None`` for anything else."""
    match = _INSTANT.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    nanos = int((match.group(7) or "").ljust(9, "0"))
    offset = timedelta(0)
    if match.group(8):
        offset = timedelta(hours=int(match.group(9)), minutes=int(match.group(10)))
        offset = -offset if match.group(8) == "-" else offset
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError:
        return None
    return moment.astimezone(UTC), nanos


_WALL_CLOCK: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"([Zz]|[+-]\d{2}:\d{2})?"
)


def _wall_clock(text: str) -> tuple[datetime, int, bool] | None:
    """Date-time text as ``(local wall clock, nanoseconds, has zone)``; ``None`` otherwise."""
    match = _WALL_CLOCK.fullmatch(text)
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
        clock = datetime(year, month, day, hour, minute, second)  # a wall clock, no zone
    except ValueError:
        return None
    return clock, int((match.group(7) or "").ljust(9, "0")), match.group(8) is not None


def stored_as(sent: str, committed: str) -> bool:
    """Whether the server may have stored the wire payload text ``sent`` as ``committed``.

    The ``already_committed`` proof's payload comparison (:func:`_stored_as`), for the rotated
    rebuild's check of which frozen rows a snapshot already contains.
    """
    return _stored_as(_decode_json(sent), _decode_json(committed))


def _stored_as(sent: Any, committed: Any) -> bool:
    """Whether the server may have stored ``sent`` (our frozen payload) as ``committed``.

    :func:`replay_equivalent`, plus what PostgreSQL does to a *naive* date-time we sent (text
    written by SQLite's ``datetime()`` or SQLAlchemy's SQLite ``DateTime``): a ``timestamp``
    column renders it as ISO 8601 with ``T`` and trimmed fraction, a ``timestamptz`` column
    reads it in the session time zone and renders it with that zone's offset - the wall clock
    is unchanged either way. Go fails closed there (§5.3: a naive text never equals a zoned
    one); this client moves a mismatching outbox to a fresh source and pushes it again, so a
    false mismatch re-sends our committed rows over later edits of other writers. Only the
    ``already_committed`` proof and the rotated rebuild's "already in the snapshot" check
    (:func:`stored_as`) use this.
    """
    if isinstance(sent, str) and isinstance(committed, str):
        if replay_equivalent(sent, committed):
            return True
        ours, theirs = _wall_clock(sent), _wall_clock(committed)
        return (
            ours is not None and theirs is not None and not ours[2]
            and ours[:2] == theirs[:2]
        )
    if isinstance(sent, Mapping) and isinstance(committed, Mapping):
        return sent.keys() == committed.keys() and all(
            _stored_as(sent[k], committed[k]) for k in sent
        )
    if isinstance(sent, list) and isinstance(committed, list):
        return len(sent) == len(committed) and all(
            _stored_as(a, b) for a, b in zip(sent, committed, strict=True)
        )
    return replay_equivalent(sent, committed)


def replay_equivalent(left: Any, right: Any) -> bool:
    """Structural JSON equality where numbers compare as doubles and RFC 3339 strings as instants.

    Used only to prove an ``already_committed`` bundle is ours: the server may have normalised
    numbers or timestamps (``...T18:42:11Z`` equals ``...T20:42:11+02:00``) but nothing else.
    """
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return float(left) == float(right)
    if isinstance(left, str) and isinstance(right, str):
        if left == right:
            return True
        a, b = _instant(left), _instant(right)
        return a is not None and a == b
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(
            replay_equivalent(left[k], right[k]) for k in left
        )
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(
            replay_equivalent(a, b) for a, b in zip(left, right, strict=True)
        )
    return left is None and right is None
