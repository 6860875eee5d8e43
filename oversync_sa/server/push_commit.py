"""Push commit: staged rows -> conflict check -> business writes -> one bundle (§5.3-5.4).

The commit reuses the shared bundle skeleton (:func:`.writes.run_bundle`): this module supplies
the policy around it (session and staging checks, seed lease, ``source_sequence_changed``) and
the ``writes`` step, which checks optimistic concurrency against ``sync.row_state`` and then
applies the staged rows.

Capture order is upload order. The capture trigger records effects in trigger-firing order, and
the committed bundle lists rows by first capture, so the apply must fire row triggers in staged
order:

* runs of INSERTs go in one ``INSERT ... SELECT`` over the run's JSON array, ordered by array
  position (``WITH ORDINALITY ... ORDER BY``), which inserts - and queues AFTER ROW triggers -
  in that order;
* UPDATE and DELETE rows are sent as one pipelined ``executemany`` of a single-row statement,
  because PostgreSQL does not promise any row order for a joined ``UPDATE``/``DELETE``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from typing import TYPE_CHECKING, Any, Final

import msgspec
from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa._crashpoints import crash_point
from oversync_sa.errors import (
    PushCommitInvalidError,
    PushConflictError,
    PushSessionCommitFailedError,
    SourceSequenceChangedError,
)
from oversync_sa.server import fastsql
from oversync_sa.server.connect import require_active_lease
from oversync_sa.server.context import BundleContext
from oversync_sa.server.payload import SCOPE_COLUMN, canonicalize_wire_payload
from oversync_sa.server.push_sessions import (
    SESSION_COLUMNS,
    PushSession,
    checked_session,
    parse_push_id,
)
from oversync_sa.server.push_validation import StagedRow, payload_columns
from oversync_sa.server.read_support import driver_connection
from oversync_sa.server.runtime_info import RuntimeTable, SyncRuntime, quote_ident
from oversync_sa.server.scope import ScopeRecord, transition_to_initialized
from oversync_sa.server.sources import SourceStateRecord, expected_after, source_record
from oversync_sa.server.upload_support import (
    client_data_reason,
    schema_drift_reason,
    unexpected_as,
    upload_transaction,
)
from oversync_sa.server.writes import run_bundle
from oversync_sa.wire.keys import KeyKind, Op, key_text
from oversync_sa.wire.models import PushSessionCommitResponse

if TYPE_CHECKING:
    from oversync_sa.server.service import SyncService

__all__ = ["RowVersion", "apply_staged_rows", "commit_push_session", "find_conflict"]

_log = logging.getLogger("oversync_sa.server.push")

_decode_members: Final = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_NULL: Final = msgspec.Raw(b"null")

# Everything the commit reads, in one round trip, read through the driver (thousands of rows
# skip SQLAlchemy's per-row result processing): the session, locked; its source's sequence row,
# locked, but only for the session's own user (a foreign session is refused, 403, before any of
# it is used); and the staged rows in upload order, each with its target's row_state (§5.3
# step 9; NULLs: absent). Every writer of row_state holds this user's advisory lock, so reading
# it here sees what the conflict check further down would. The session columns repeat on every
# row; with no staged row there is one row whose staged columns are NULL.
# §5.3 step 11 (the committed session goes, its staged rows cascade with it) rides on the same
# statement: ``gone`` joins ``s``, so the row is locked before it is deleted, the rows are read
# from the statement's snapshot, and any later failure rolls the delete back.
_LOAD_SQL: Final = (
    f"WITH s AS (SELECT {SESSION_COLUMNS}, src.user_pk AS src_user_pk, "
    "src.source_id AS src_source_id, src.state, src.max_committed_source_bundle_id, "
    "src.replaced_by_source_id, src.retirement_reason "
    "FROM sync.push_sessions ps JOIN sync.user_state us ON us.user_pk = ps.user_pk "
    "LEFT JOIN LATERAL (SELECT * FROM sync.source_state ss WHERE ss.user_pk = ps.user_pk "
    "AND ss.source_id = ps.source_id AND us.user_id = $2 FOR UPDATE) src ON true "
    "WHERE ps.push_id = $1 FOR UPDATE OF ps), "
    "gone AS (DELETE FROM sync.push_sessions p USING s WHERE p.push_id = s.push_id) "
    "SELECT s.*, r.row_ordinal, r.table_id, r.key_bytes, r.op_code, r.base_bundle_seq, "
    "r.payload_apply::text, rs.bundle_seq, rs.deleted "
    "FROM s LEFT JOIN sync.push_session_rows r ON r.push_id = s.push_id "
    "LEFT JOIN sync.row_state rs ON rs.user_pk = s.user_pk AND rs.table_id = r.table_id "
    "AND rs.key_bytes = r.key_bytes ORDER BY r.row_ordinal"
)
#: Where the source columns and the staged-row columns start in a :data:`_LOAD_SQL` row.
_SOURCE_AT: Final = 9
_STAGED_AT: Final = 15


@dataclass(frozen=True, slots=True)
class RowVersion:
    """A row's ``sync.row_state``: the bundle that last touched it and its tombstone flag."""

    bundle_seq: int
    deleted: bool


# ------------------------------------------------------------------------------ staged rows


def _staged_row(runtime: SyncRuntime, row: Sequence[Any]) -> StagedRow:
    at = _STAGED_AT
    table = runtime.by_id[row[at + 1]]
    raw_key = bytes(row[at + 2])
    op = Op.from_code(row[at + 3])
    payload = None if row[at + 5] is None else row[at + 5].encode("utf-8")
    columns = () if payload is None else payload_columns(list(_decode_members(payload)))
    return StagedRow(
        table=table,
        key=key_text(KeyKind(table.key_kind), raw_key),
        key_bytes=raw_key,
        op=op,
        base_row_version=int(row[at + 4]),
        payload=payload,
        columns=columns,
    )


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What :func:`_load_staged_rows` read: ``versions`` maps a row's index to its row_state."""

    session: PushSession
    source: SourceStateRecord | None
    rows: list[StagedRow]
    versions: dict[int, RowVersion]


async def _load_staged_rows(
    conn: AsyncConnection, raw_push_id: str, user_id: str, runtime: SyncRuntime
) -> _Loaded:
    """§5.3 steps 1-4: the locked session, then its complete, contiguous, duplicate-free staged
    rows in upload order (see :data:`_LOAD_SQL`, which also deletes the session).

    Session errors come first, exactly as :func:`.push_sessions.load_push_session` raises them.
    ``conn`` must already be inside its transaction (the driver is used directly).
    """
    push_id = parse_push_id(raw_push_id)
    if push_id is None:
        checked_session(None, raw_push_id, user_id)
    raw = await driver_connection(conn)
    records = await raw.fetch(_LOAD_SQL, push_id, user_id)
    first = records[0] if records else None
    session = checked_session(first, raw_push_id, user_id)
    assert first is not None
    source = source_record(first[_SOURCE_AT:_STAGED_AT])
    if first[_STAGED_AT] is None:
        records = []
    planned = session.planned_row_count
    if session.next_expected_row_ordinal != planned or len(records) != planned:
        raise PushCommitInvalidError(
            f"staged row count {len(records)} does not match planned_row_count {planned}"
        )
    staged: list[StagedRow] = []
    versions: dict[int, RowVersion] = {}
    seen: set[tuple[int, bytes]] = set()
    for index, row in enumerate(records):
        if int(row[_STAGED_AT]) != index:
            raise PushCommitInvalidError(f"staged rows are not contiguous at row_ordinal {index}")
        item = _staged_row(runtime, row)
        target = (item.table.table_id, item.key_bytes)
        if target in seen:
            raise PushCommitInvalidError(
                f"duplicate target row in staged push session: {item.table.name} {item.key}"
            )
        seen.add(target)
        staged.append(item)
        if row[_STAGED_AT + 6] is not None:
            versions[index] = RowVersion(int(row[_STAGED_AT + 6]), bool(row[_STAGED_AT + 7]))
    return _Loaded(session, source, staged, versions)


# -------------------------------------------------------------------------------- conflicts


def find_conflict(
    rows: Sequence[StagedRow], versions: Mapping[int, RowVersion]
) -> tuple[int, str] | None:
    """The first row that violates §5.4's table, as ``(index, message)``; ``None`` if all pass.

    ``versions`` maps a row's index to its ``row_state``; a missing index means "absent".
    """
    for index, row in enumerate(rows):
        state = versions.get(index)
        base = row.base_row_version
        where = f"{row.table.name} {row.key}"
        if row.op is Op.INSERT:
            if state is None:
                if base != 0:
                    return index, (
                        f"insert conflict on {where}: expected missing row at version 0, "
                        f"got {base}"
                    )
            elif base != state.bundle_seq:
                return index, (
                    f"insert conflict on {where}: expected base_row_version "
                    f"{state.bundle_seq}, got {base}"
                )
            elif not state.deleted:
                return index, (
                    f"insert conflict on {where}: row already exists at version "
                    f"{state.bundle_seq}"
                )
            continue
        verb = row.op.value.lower()
        if state is None or state.deleted:
            return index, f"{verb} conflict on {where}: row does not exist"
        if base != state.bundle_seq:
            return index, (
                f"{verb} conflict on {where}: expected version {state.bundle_seq}, got {base}"
            )
    return None


def _key_param(table: RuntimeTable) -> str:
    return "CAST(:key AS uuid)" if table.key_type == "uuid" else "CAST(:key AS text)"


@lru_cache(maxsize=256)
def _server_row_sql(table: RuntimeTable) -> TextClause:
    return text(
        f"SELECT (to_jsonb(src) - '{SCOPE_COLUMN}')::text FROM {table.sql_name} AS src "
        f"WHERE src.{quote_ident(table.key_column)} = {_key_param(table)} "
        f"AND src.{quote_ident(SCOPE_COLUMN)} = :scope"
    )


async def _server_row(
    conn: AsyncConnection, runtime: SyncRuntime, user_id: str, row: StagedRow
) -> msgspec.Raw:
    current = (
        await conn.execute(_server_row_sql(row.table), {"key": row.key, "scope": user_id})
    ).scalar_one_or_none()
    if current is None:
        return _NULL
    column_types = runtime.column_types.get(row.table.name, {})
    return msgspec.Raw(canonicalize_wire_payload(str(current).encode("utf-8"), column_types))


async def _raise_on_conflict(
    conn: AsyncConnection,
    runtime: SyncRuntime,
    session: PushSession,
    rows: Sequence[StagedRow],
    versions: Mapping[int, RowVersion],
) -> None:
    """§5.3 step 9: the rows' ``row_state`` (read with them); the first conflict aborts."""
    found = find_conflict(rows, versions)
    if found is None:
        return
    index, message = found
    row = rows[index]
    state = versions.get(index)
    live = state is not None and not state.deleted
    server_row = await _server_row(conn, runtime, session.user_id, row) if live else _NULL
    _log.info(
        "push conflict user=%s source=%s on %s: %s",
        session.user_id, session.source_id, row.table.name, message,
        extra={
            "user": session.user_id,
            "source_id": session.source_id,
            "push_id": str(session.push_id),
            "table": row.table.name,
            "key": row.key,
        },
    )
    raise PushConflictError(
        message,
        conflict={
            "schema": row.table.schema,
            "table": row.table.table,
            "key": {row.table.key_column: row.key},
            "op": row.op.value,
            "base_row_version": row.base_row_version,
            "server_row_version": 0 if state is None else state.bundle_seq,
            "server_row_deleted": False if state is None else state.deleted,
            # Raw: PostgreSQL's jsonb text (or the canonical rewrite) is sent byte for byte.
            "server_row": server_row,
        },
    )


# ------------------------------------------------------------------------------------ apply


@lru_cache(maxsize=256)
def _insert_sql(table: RuntimeTable, columns: tuple[str, ...]) -> TextClause:
    listed = ", ".join(quote_ident(c) for c in columns)
    selected = ", ".join(f"src.{quote_ident(c)}" for c in columns)
    return text(
        f"INSERT INTO {table.sql_name} ({quote_ident(SCOPE_COLUMN)}, {listed}) "
        f"SELECT CAST(:scope AS text), {selected} "
        "FROM jsonb_array_elements(CAST(:rows AS jsonb)) WITH ORDINALITY AS e(doc, n) "
        f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{table.sql_name}, e.doc) AS src "
        "ORDER BY e.n"
    )


@lru_cache(maxsize=256)
def _update_sql(table: RuntimeTable, columns: tuple[str, ...]) -> TextClause:
    assignments = ", ".join(f"{quote_ident(c)} = src.{quote_ident(c)}" for c in columns)
    return text(
        f"UPDATE {table.sql_name} AS dst SET {assignments} "
        f"FROM jsonb_populate_record(NULL::{table.sql_name}, CAST(:payload AS jsonb)) AS src "
        f"WHERE dst.{quote_ident(table.key_column)} = {_key_param(table)} "
        f"AND dst.{quote_ident(SCOPE_COLUMN)} = :scope"
    )


@lru_cache(maxsize=256)
def _delete_sql(table: RuntimeTable) -> TextClause:
    return text(
        f"DELETE FROM {table.sql_name} "
        f"WHERE {quote_ident(table.key_column)} = {_key_param(table)} "
        f"AND {quote_ident(SCOPE_COLUMN)} = :scope"
    )


def _runs(rows: Sequence[StagedRow]) -> Iterator[list[StagedRow]]:
    """Maximal runs of consecutive rows that one statement can apply."""
    for _, run in groupby(rows, key=lambda r: (r.table.table_id, r.op, r.columns)):
        yield list(run)


async def apply_staged_rows(
    conn: AsyncConnection, user_id: str, rows: Sequence[StagedRow]
) -> None:
    """Write ``rows`` to the business tables of scope ``user_id``, firing triggers in order.

    Only payload columns are written: omitted columns get their DEFAULT on INSERT and keep their
    value on UPDATE. PostgreSQL converts the JSON values with each column type's input rules;
    unknown columns or bad values are SQL errors.
    """
    for run in _runs(rows):
        first = run[0]
        if first.op is Op.INSERT:
            payloads = b"[" + b",".join(r.payload or b"null" for r in run) + b"]"
            await fastsql.execute(
                conn,
                _insert_sql(first.table, first.columns),
                {"scope": user_id, "rows": payloads.decode("utf-8")},
            )
        elif first.op is Op.UPDATE:
            await conn.execute(
                _update_sql(first.table, first.columns),
                [
                    {"scope": user_id, "key": r.key, "payload": (r.payload or b"").decode()}
                    for r in run
                ],
            )
        else:
            await conn.execute(
                _delete_sql(first.table), [{"scope": user_id, "key": r.key} for r in run]
            )


# ----------------------------------------------------------------------------------- commit


def _check_source(session: PushSession, source: SourceStateRecord | None) -> None:
    """§5.3 step 7: the session's tuple must still be its source's next expected id."""
    expected, _ = expected_after(session.user_id, source)
    if session.source_bundle_id != expected:
        raise SourceSequenceChangedError(
            f"source {session.source_id} for user {session.user_id} changed expected next "
            f"source_bundle_id from staged {session.source_bundle_id} to {expected} "
            "before commit"
        )


async def _commit(
    conn: AsyncConnection, service: SyncService, user_id: str, raw_push_id: str
) -> PushSessionCommitResponse:
    runtime = service.runtime
    if parse_push_id(raw_push_id) is None:
        checked_session(None, raw_push_id, user_id)
    loaded = await _load_staged_rows(conn, raw_push_id, user_id, runtime)
    session, source, rows, versions = loaded.session, loaded.source, loaded.rows, loaded.versions
    seed_scope: ScopeRecord | None = None
    if session.is_seed:
        seed_scope = await require_active_lease(
            conn, session.user_id, session.source_id, session.initialization_id,
            service.config.initialization_lease_ttl,
        )
    _check_source(session, source)
    context = BundleContext(
        user_id=session.user_id,
        user_pk=session.user_pk,
        source_id=session.source_id,
        source_bundle_id=session.source_bundle_id,
        initialization_id=session.initialization_id,
    )

    async def writes() -> None:
        await _raise_on_conflict(conn, runtime, session, rows, versions)
        try:
            await apply_staged_rows(conn, session.user_id, rows)
        except DBAPIError as exc:
            # Only the business-table writes can meet a registered table altered since
            # bootstrap; the same SQLSTATE from the server's own statements is a server bug
            # and stays an anonymous 500.
            drift = schema_drift_reason(exc)
            if drift is None:
                raise
            _log.error("push commit user=%s push=%s: %s", user_id, raw_push_id, drift,
                       extra={"user": user_id, "push_id": raw_push_id})
            raise PushSessionCommitFailedError(f"commit push session failed: {drift}") from exc

    bundle = await run_bundle(conn, service, context, writes)
    if bundle is None:
        raise PushCommitInvalidError("push session produced no captured business-table effects")
    if seed_scope is not None:
        await transition_to_initialized(conn, seed_scope, session.source_id)
    crash_point("server.commit.before_commit")
    return PushSessionCommitResponse(
        bundle_seq=bundle.bundle_seq,
        source_id=bundle.source_id,
        source_bundle_id=bundle.source_bundle_id,
        row_count=bundle.row_count,
        bundle_hash=bundle.bundle_hash,
    )


async def commit_push_session(
    service: SyncService, user_id: str, source_id: str, push_id: str
) -> PushSessionCommitResponse:
    """Commit a fully staged session as one bundle (``POST /sync/push-sessions/{push_id}/commit``).

    The bundle is attributed to the *session's* source, whichever source of the owning user
    commits. A seed session (created under an initialization lease) moves the scope to
    ``INITIALIZED`` in the same transaction. Committing again afterwards gives
    :class:`PushSessionNotFoundError`; re-creating the tuple gives ``already_committed``.

    Raises the session errors of :func:`.push_sessions.load_push_session`,
    :class:`PushCommitInvalidError`, :class:`InitializationStaleError`,
    :class:`SourceRetiredError`, :class:`SourceSequenceChangedError`,
    :class:`PushConflictError`, or :class:`PushSessionCommitFailedError` for anything else,
    including deferred foreign-key violations raised at COMMIT.
    """
    del source_id  # sessions are owned per user (§11.12)
    with unexpected_as(PushSessionCommitFailedError, "commit push session"):
        async with service.operation():
            try:
                response = await upload_transaction(
                    service, user_id, lambda conn: _commit(conn, service, user_id, push_id),
                    defer_constraints=True,
                )
            except DBAPIError as exc:
                reason = client_data_reason(exc)
                if reason is None:
                    raise
                _log.info("push commit user=%s push=%s refused by PostgreSQL: %s",
                          user_id, push_id, reason, extra={"user": user_id, "push_id": push_id})
                raise PushSessionCommitFailedError(
                    f"commit push session failed: {reason}"
                ) from exc
    crash_point("server.commit.after_commit")
    _log.debug(
        "push commit user=%s source=%s sbid=%d -> bundle %d (%d rows)",
        user_id, response.source_id, response.source_bundle_id, response.bundle_seq,
        response.row_count,
        extra={
            "user": user_id,
            "source_id": response.source_id,
            "push_id": push_id,
            "source_bundle_id": response.source_bundle_id,
            "bundle_seq": response.bundle_seq,
            "rows": response.row_count,
        },
    )
    return response
