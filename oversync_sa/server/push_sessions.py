"""Push-session staging: create, chunk upload, delete, TTL cleanup (SERVER.md §5.1-5.2, §5.5-5.6).

A logical push is the tuple ``(user, source_id, source_bundle_id)``. Rows are staged in
``sync.push_session_rows`` and touch no business table until the commit (:mod:`.push_commit`).
Sessions belong to a *user*, not a source: any source of the owner may upload to or commit a
session, another user gets ``push_session_forbidden``.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.errors import (
    HistoryPrunedError,
    InitializationExpiredError,
    PushChunkFailedError,
    PushChunkInvalidError,
    PushChunkOutOfOrderError,
    PushSessionCreateFailedError,
    PushSessionDeleteFailedError,
    PushSessionExpiredError,
    PushSessionForbiddenError,
    PushSessionInvalidError,
    PushSessionNotFoundError,
    ScopeUninitializedError,
    SourceSequenceOutOfOrderError,
)
from oversync_sa.server import fastsql
from oversync_sa.server.connect import check_active_lease, require_active_lease
from oversync_sa.server.payload_types import (
    PayloadTypesRejected,
    conversion_checks,
    conversion_params,
    data_exception_reason,
    explain_rejected_payloads,
    payload_groups,
)
from oversync_sa.server.push_validation import StagedRow, validate_chunk
from oversync_sa.server.runtime_info import RuntimeTable
from oversync_sa.server.scope import ScopeRecord, ScopeState, lock_scope
from oversync_sa.server.sources import (
    SourceStateRecord,
    expected_after,
    source_record,
)
from oversync_sa.server.upload_support import unexpected_as, upload_transaction
from oversync_sa.wire.models import (
    PushSessionChunkRequest,
    PushSessionChunkResponse,
    PushSessionCreateRequest,
    PushSessionCreateResponse,
    PushSessionStatus,
)

if TYPE_CHECKING:
    from oversync_sa.server.service import SyncService

__all__ = [
    "SESSION_COLUMNS",
    "PushSession",
    "checked_session",
    "create_push_session",
    "delete_expired_push_sessions",
    "delete_push_session",
    "load_push_session",
    "parse_push_id",
    "upload_push_chunk",
]

_log = logging.getLogger("oversync_sa.server.push")

# The forms Go's uuid.Parse accepts: dashed, braced, urn:uuid: and 32 bare hex digits.
_HEX: Final = r"[0-9a-fA-F]"
_DASHED: Final = rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
_PUSH_ID: Final = re.compile(rf"{_DASHED}|\{{{_DASHED}\}}|(?i:urn:uuid:){_DASHED}|{_HEX}{{32}}")

_CLEANUP_SQL: Final = text("DELETE FROM sync.push_sessions WHERE expires_at <= now()")
#: Columns of :class:`PushSession`, in field order, over ``ps`` joined with ``us``.
SESSION_COLUMNS: Final = (
    "ps.push_id, ps.user_pk, us.user_id, ps.source_id, ps.source_bundle_id, "
    "ps.planned_row_count, ps.next_expected_row_ordinal, "
    "COALESCE(ps.initialization_id::text, '') AS initialization_id, "
    "now() > ps.expires_at AS expired"
)
_LOAD_SQL: Final = text(
    f"SELECT {SESSION_COLUMNS} "
    "FROM sync.push_sessions ps JOIN sync.user_state us ON us.user_pk = ps.user_pk "
    "WHERE ps.push_id = :push_id FOR UPDATE OF ps"
)
# Steps 4 and 5 of create read independent rows; one statement answers both. Step 5 reads the
# source row unlocked, as before: create stages nothing the sequence could invalidate, and
# commit re-checks the sequence under a row lock.
_COMMITTED_AND_SOURCE_SQL: Final = text(
    "SELECT bl.bundle_seq, bl.source_id, bl.source_bundle_id, bl.row_count, "
    "encode(bl.bundle_hash, 'hex'), ss.user_pk, ss.source_id, ss.state, "
    "ss.max_committed_source_bundle_id, ss.replaced_by_source_id, ss.retirement_reason "
    "FROM (SELECT 1) AS one "
    "LEFT JOIN sync.bundle_log bl ON bl.user_pk = :user_pk AND bl.source_id = :source_id "
    "AND bl.source_bundle_id = :source_bundle_id AND bl.bundle_seq > :floor "
    "LEFT JOIN sync.source_state ss ON ss.user_pk = :user_pk AND ss.source_id = :source_id"
)
# Steps 1, 6 and 7 of create in one statement. The expired-session cleanup moves from the start
# of the transaction to here: on every path that reaches this point the transaction commits, and
# on every earlier error it rolled the cleanup back anyway (the replay path runs it on its own).
# Referencing ``gone`` makes the DELETE run before the INSERT, so the replaced session's tuple
# no longer blocks the unique key.
_REPLACE_AND_INSERT_SQL: Final = text(
    "WITH gone AS (DELETE FROM sync.push_sessions WHERE expires_at <= now() "
    "OR (user_pk = :user_pk AND source_id = :source_id "
    "AND source_bundle_id = :source_bundle_id) RETURNING 1) "
    "INSERT INTO sync.push_sessions (push_id, user_pk, source_id, source_bundle_id, "
    "planned_row_count, next_expected_row_ordinal, initialization_id, expires_at) "
    "SELECT gen_random_uuid(), :user_pk, :source_id, :source_bundle_id, :planned, 0, "
    "CAST(NULLIF(:initialization_id, '') AS uuid), now() + make_interval(secs => :ttl) "
    "WHERE (SELECT count(*) FROM gone) >= 0 "
    "RETURNING push_id::text"
)
# One statement for the whole chunk: the payload type check (payload_types), the rows with
# row_ordinal = start + position in the chunk, and the session's progress and TTL.
_STAGE_ROWS: Final = (
    "staged AS ("
    "INSERT INTO sync.push_session_rows (push_id, row_ordinal, table_id, key_bytes, op_code, "
    "base_bundle_seq, payload_apply) "
    "SELECT :push_id, :start + r.ord - 1, r.table_id, r.key_bytes, r.op_code, r.base, "
    "CAST(r.payload AS json) "
    "FROM unnest(CAST(:table_ids AS integer[]), CAST(:key_bytes AS bytea[]), "
    "CAST(:op_codes AS smallint[]), CAST(:bases AS bigint[]), CAST(:payloads AS text[])) "
    "WITH ORDINALITY AS r(table_id, key_bytes, op_code, base, payload, ord)) "
    "UPDATE sync.push_sessions SET next_expected_row_ordinal = :next, "
    "expires_at = now() + make_interval(secs => :ttl) WHERE push_id = :push_id"
)


@lru_cache(maxsize=256)
def _stage_sql(tables: tuple[RuntimeTable, ...]) -> TextClause:
    checks, guard = conversion_checks(tables)
    return text(f"WITH {checks}{_STAGE_ROWS}" + (f" AND {guard}" if guard else ""))


_DELETE_SQL: Final = text("DELETE FROM sync.push_sessions WHERE push_id = :push_id")


@dataclass(frozen=True, slots=True)
class PushSession:
    """A locked ``sync.push_sessions`` row with its owner's ``user_id``.

    ``initialization_id`` is ``""`` unless this is a seed push under an initialization lease.
    """

    push_id: uuid.UUID
    user_pk: int
    user_id: str
    source_id: str
    source_bundle_id: int
    planned_row_count: int
    next_expected_row_ordinal: int
    initialization_id: str
    expired: bool

    @property
    def is_seed(self) -> bool:
        return bool(self.initialization_id)


def parse_push_id(raw: str) -> uuid.UUID | None:
    """The session id of a path value, or ``None`` when it is not a UUID in a form Go accepts.

    Go trims the value for its parse check but then casts the *untrimmed* text in SQL, turning
    surrounding whitespace and the ``urn:uuid:`` form into a 500. Here the parsed value is what
    the query uses, so every accepted form resolves to the same session.
    """
    value = raw.strip()
    if not _PUSH_ID.fullmatch(value):
        return None
    return uuid.UUID(value)


async def delete_expired_push_sessions(conn: AsyncConnection) -> int:
    """Remove every expired push session of every user (rows cascade); returns how many."""
    result = await conn.execute(_CLEANUP_SQL)
    return int(result.rowcount or 0)


def checked_session(row: Sequence[Any] | None, raw_push_id: str, user_id: str) -> PushSession:
    """The session of a :data:`SESSION_COLUMNS` row, checked as :func:`load_push_session` does."""
    if row is None:
        raise PushSessionNotFoundError(f"push session {raw_push_id} was not found")
    session = PushSession(
        push_id=row[0],
        user_pk=int(row[1]),
        user_id=str(row[2]),
        source_id=str(row[3]),
        source_bundle_id=int(row[4]),
        planned_row_count=int(row[5]),
        next_expected_row_ordinal=int(row[6]),
        initialization_id=str(row[7]),
        expired=bool(row[8]),
    )
    if session.user_id != user_id:
        raise PushSessionForbiddenError(
            f"push session {raw_push_id} does not belong to the authenticated user"
        )
    if session.expired:
        raise PushSessionExpiredError(
            f"push session {raw_push_id} has expired; start a new push session"
        )
    return session


async def load_push_session(conn: AsyncConnection, raw_push_id: str, user_id: str) -> PushSession:
    """Lock the session named by a path value and check it is usable by ``user_id``.

    Raises, in this order: :class:`PushSessionNotFoundError` (not a UUID, or no such session),
    :class:`PushSessionForbiddenError` (another user's), :class:`PushSessionExpiredError`.
    """
    push_id = parse_push_id(raw_push_id)
    row = (
        None
        if push_id is None
        else (await fastsql.execute(conn, _LOAD_SQL, {"push_id": push_id})).one_or_none()
    )
    return checked_session(row, raw_push_id, user_id)


# ------------------------------------------------------------------------------------- create


async def _scope_gate(
    conn: AsyncConnection, scope: ScopeRecord, source_id: str, initialization_id: str,
    ttl: timedelta,
) -> None:
    """§5.1 step 3: which scope states admit a push, and with or without a lease id."""
    if scope.state is ScopeState.UNINITIALIZED:
        if initialization_id:
            raise InitializationExpiredError("initialization lease is no longer active")
        raise ScopeUninitializedError(f"sync scope for user {scope.user_id} is not initialized")
    if scope.state is ScopeState.INITIALIZING:
        if not initialization_id:
            raise PushSessionInvalidError(
                "initialization_id is required while the scope is initializing"
            )
        await check_active_lease(conn, scope, source_id, initialization_id, ttl)
    elif initialization_id:
        raise PushSessionInvalidError(
            "initialization_id must be absent once the scope is initialized"
        )


def _replay(row: Sequence[Any]) -> PushSessionCreateResponse | None:
    """The replay answer for a tuple whose bundle is still above the retained floor."""
    if row[0] is None:
        return None
    return PushSessionCreateResponse(
        status=PushSessionStatus.ALREADY_COMMITTED,
        bundle_seq=int(row[0]),
        source_id=str(row[1]),
        source_bundle_id=int(row[2]),
        row_count=int(row[3]),
        bundle_hash=str(row[4]),
    )


def _check_sequence(
    scope: ScopeRecord, source_id: str, source_bundle_id: int,
    record: SourceStateRecord | None,
) -> None:
    expected, max_committed = expected_after(scope.user_id, record)
    if source_bundle_id < expected:
        raise HistoryPrunedError(
            f"source tuple ({source_id}, {source_bundle_id}) for user {scope.user_id} is older "
            "than retained duplicate history; max committed source_bundle_id is "
            f"{max_committed}"
        )
    if source_bundle_id > expected:
        raise SourceSequenceOutOfOrderError(
            f"source {source_id} for user {scope.user_id} expected next source_bundle_id "
            f"{expected}, got {source_bundle_id}"
        )


async def _create(
    conn: AsyncConnection,
    service: SyncService,
    user_id: str,
    source_id: str,
    request: PushSessionCreateRequest,
    initialization_id: str,
) -> PushSessionCreateResponse:
    config = service.config
    scope = await lock_scope(conn, user_id)
    await _scope_gate(conn, scope, source_id, initialization_id, config.initialization_lease_ttl)
    tuple_params = {
        "user_pk": scope.user_pk,
        "source_id": source_id,
        "source_bundle_id": request.source_bundle_id,
    }
    found = (
        await fastsql.execute(
            conn, _COMMITTED_AND_SOURCE_SQL, {**tuple_params, "floor": scope.retained_bundle_floor}
        )
    ).one()
    replay = _replay(found)
    if replay is not None:
        await delete_expired_push_sessions(conn)
        return replay
    _check_sequence(scope, source_id, request.source_bundle_id, source_record(found[5:]))
    # Hard replace: an earlier, uncommitted session of this tuple (and its rows) is discarded.
    push_id = (
        await fastsql.execute(
            conn,
            _REPLACE_AND_INSERT_SQL,
            {
                **tuple_params,
                "planned": request.planned_row_count,
                "initialization_id": initialization_id,
                "ttl": config.push_session_ttl.total_seconds(),
            },
        )
    ).scalar_one()
    return PushSessionCreateResponse(
        push_id=str(push_id),
        status=PushSessionStatus.STAGING,
        planned_row_count=request.planned_row_count,
    )


async def create_push_session(
    service: SyncService, user_id: str, source_id: str, request: PushSessionCreateRequest
) -> PushSessionCreateResponse:
    """Open a staging session for ``(user, source_id, source_bundle_id)`` (create, §5.1).

    Returns ``status="already_committed"`` with the committed bundle's metadata when the tuple
    is already committed and still retained; otherwise a new ``staging`` session, replacing any
    uncommitted session of the same tuple. Only the actor's ``source_id`` is used.

    Raises :class:`PushSessionInvalidError`, :class:`ScopeUninitializedError`,
    :class:`InitializationStaleError`, :class:`InitializationExpiredError`,
    :class:`HistoryPrunedError`, :class:`SourceSequenceOutOfOrderError`,
    :class:`SourceRetiredError`, or :class:`PushSessionCreateFailedError` for anything else.
    """
    if request.source_bundle_id <= 0:
        raise PushSessionInvalidError("source_bundle_id must be > 0")
    if request.planned_row_count <= 0:
        raise PushSessionInvalidError("planned_row_count must be > 0")
    initialization_id = request.initialization_id.strip()
    with unexpected_as(PushSessionCreateFailedError, "create push session"):
        async with service.operation():
            response = await upload_transaction(
                service,
                user_id,
                lambda conn: _create(conn, service, user_id, source_id, request,
                                     initialization_id),
            )
    _log.debug(
        "push create user=%s source=%s sbid=%d -> %s",
        user_id, source_id, request.source_bundle_id, response.status,
    )
    return response


# -------------------------------------------------------------------------------------- chunk


def _stage_params(push_id: uuid.UUID, start: int, rows: Sequence[StagedRow]) -> dict[str, object]:
    return {
        "push_id": push_id,
        "start": start,
        "table_ids": [r.table.table_id for r in rows],
        "key_bytes": [r.key_bytes for r in rows],
        "op_codes": [r.op.code for r in rows],
        "bases": [r.base_row_version for r in rows],
        "payloads": [None if r.payload is None else r.payload.decode("utf-8") for r in rows],
    }


async def _upload(
    conn: AsyncConnection,
    service: SyncService,
    user_id: str,
    raw_push_id: str,
    start: int,
    rows: Sequence[StagedRow],
) -> PushSessionChunkResponse:
    config = service.config
    session = await load_push_session(conn, raw_push_id, user_id)
    if session.is_seed:
        await require_active_lease(
            conn, session.user_id, session.source_id, session.initialization_id,
            config.initialization_lease_ttl,
        )
    if start != session.next_expected_row_ordinal:
        raise PushChunkOutOfOrderError(
            f"push session {raw_push_id} expected start_row_ordinal "
            f"{session.next_expected_row_ordinal}, got {start}"
        )
    next_ordinal = start + len(rows)
    if next_ordinal > session.planned_row_count:
        raise PushChunkInvalidError("chunk exceeds planned_row_count")
    groups = payload_groups(rows)
    try:
        await fastsql.execute(
            conn,
            _stage_sql(tuple(table for table, _ in groups)),
            {
                **_stage_params(session.push_id, start, rows),
                **conversion_params(groups),
                "next": next_ordinal,
                "ttl": config.push_session_ttl.total_seconds(),
            },
        )
    except DBAPIError as exc:
        if data_exception_reason(exc) is None:
            raise
        raise PayloadTypesRejected(groups, exc) from exc
    return PushSessionChunkResponse(push_id=raw_push_id, next_expected_row_ordinal=next_ordinal)


async def upload_push_chunk(
    service: SyncService,
    user_id: str,
    source_id: str,
    push_id: str,
    request: PushSessionChunkRequest,
) -> PushSessionChunkResponse:
    """Stage one chunk of rows (``POST /sync/push-sessions/{push_id}/chunks``).

    ``push_id`` is the path value as received and is echoed verbatim. Rows are validated before
    any database work, so an invalid chunk for an unknown session is a 400, not a 404. Any source
    of the owning user may upload; ``source_id`` is accepted for symmetry and not compared.

    Raises :class:`PushChunkInvalidError`, :class:`PushSessionNotFoundError`,
    :class:`PushSessionForbiddenError`, :class:`PushSessionExpiredError`,
    :class:`InitializationStaleError` / :class:`InitializationExpiredError` (seed sessions),
    :class:`PushChunkOutOfOrderError`, or :class:`PushChunkFailedError` for anything else.
    """
    del source_id  # sessions are owned per user (§11.12)
    with unexpected_as(PushChunkFailedError, "upload push chunk"):
        async with service.operation():
            rows = validate_chunk(
                request, service.runtime, service.config.max_rows_per_push_chunk
            )
            try:
                return await upload_transaction(
                    service,
                    user_id,
                    lambda conn: _upload(
                        conn, service, user_id, push_id, request.start_row_ordinal, rows
                    ),
                )
            except PayloadTypesRejected as rejected:
                await explain_rejected_payloads(service.engine, rejected)


# ------------------------------------------------------------------------------------- delete


async def delete_push_session(
    service: SyncService, user_id: str, source_id: str, push_id: str
) -> None:
    """Discard a staging session (``DELETE /sync/push-sessions/{push_id}``, answered 204).

    Takes no user lock. An expired session is reported (:class:`PushSessionExpiredError`) and
    left for the cleanup; unknown ids give :class:`PushSessionNotFoundError`, another user's
    :class:`PushSessionForbiddenError`, anything else :class:`PushSessionDeleteFailedError`.
    """
    del source_id  # sessions are owned per user (§11.12)
    with unexpected_as(PushSessionDeleteFailedError, "delete push session"):
        async with service.operation(), service.engine.begin() as conn:
            session = await load_push_session(conn, push_id, user_id)
            await conn.execute(_DELETE_SQL, {"push_id": session.push_id})
