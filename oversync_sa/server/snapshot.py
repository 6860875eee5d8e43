"""Snapshot sessions (SERVER.md §6.3): create, read in chunks, delete, expire.

A snapshot is the scope's complete after-image at one ``snapshot_bundle_seq``, materialised
once into ``sync.snapshot_session_rows`` and then served in 1-based row-ordinal chunks. Because
it is materialised, a session stays readable after the history it reflects has been pruned, and
chunk reads are plain indexed range scans that never modify the session (no expiry refresh).

Expiry uses the database clock (``now()``), like the scope leases, so several server processes
agree on it. Ownership is per user: another user's session answers 403, never its content.

Chunks are served in two shapes with identical wire bytes: :func:`get_snapshot_chunk` builds
the wire Structs, :func:`get_snapshot_chunk_encoded` lets PostgreSQL render the chunk's JSON
(:mod:`.snapshot_encoded`), which the HTTP route sends.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Final

from msgspec import Raw
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from oversync_sa.errors import (
    SnapshotChunkInvalidError,
    SnapshotSessionCreateFailedError,
    SnapshotSessionExpiredError,
    SnapshotSessionForbiddenError,
    SnapshotSessionNotFoundError,
)
from oversync_sa.server.read_support import (
    ActorLike,
    driver_connection,
    key_text_sql,
    locked_repeatable_read,
    read_transaction,
    require_actor,
    uuid_table_ids,
)
from oversync_sa.server.scope import read_scope, require_initialized
from oversync_sa.server.snapshot_encoded import (
    ENCODED_CHUNK_SQL,
    SnapshotChunkWire,
    build_encoded_chunk,
    encoded_chunk_params,
    ordinal_bound,
)
from oversync_sa.server.snapshot_materialize import (
    count_live_row_state,
    materialize_snapshot_rows,
)
from oversync_sa.server.snapshot_rotation import (
    apply_source_replacement,
    validate_source_replacement,
)
from oversync_sa.wire.models import (
    SnapshotChunkResponse,
    SnapshotRow,
    SnapshotSession,
    SnapshotSessionCreateRequest,
)
from oversync_sa.wire.timefmt import format_timestamp

if TYPE_CHECKING:
    from oversync_sa.server.service import SyncService

__all__ = [
    "cleanup_expired_snapshot_sessions",
    "create_snapshot_session",
    "delete_snapshot_session",
    "get_snapshot_chunk",
    "get_snapshot_chunk_encoded",
]

_log = logging.getLogger("oversync_sa.server.snapshot")

_CLEANUP_SQL: Final = text("DELETE FROM sync.snapshot_sessions WHERE expires_at <= now()")
_INSERT_SESSION_SQL: Final = text(
    "INSERT INTO sync.snapshot_sessions "
    "(snapshot_id, user_pk, snapshot_bundle_seq, row_count, byte_count, expires_at) "
    "VALUES (:snapshot_id, :user_pk, :bundle_seq, 0, 0, now() + make_interval(secs => :ttl)) "
    "RETURNING expires_at"
)
_SET_TOTALS_SQL: Final = text(
    "UPDATE sync.snapshot_sessions SET row_count = :row_count, byte_count = :byte_count "
    "WHERE snapshot_id = :snapshot_id"
)
_SESSION_SQL: Final = text(
    "SELECT us.user_id, ss.snapshot_bundle_seq, now() > ss.expires_at AS expired "
    "FROM sync.snapshot_sessions ss JOIN sync.user_state us ON us.user_pk = ss.user_pk "
    "WHERE ss.snapshot_id = :snapshot_id"
)
_SESSION_FOR_DELETE_SQL: Final = text(
    "SELECT us.user_id FROM sync.snapshot_sessions ss "
    "JOIN sync.user_state us ON us.user_pk = ss.user_pk "
    "WHERE ss.snapshot_id = :snapshot_id FOR UPDATE OF ss"
)
_DELETE_SQL: Final = text("DELETE FROM sync.snapshot_sessions WHERE snapshot_id = :snapshot_id")
# Ordinals are 1..N without gaps (materialisation numbers them), so the chunk plus its has_more
# row is also the closed range after+1 .. $5 (= after+limit+1, capped). Saying so lets the
# planner read just that range even when the session's rows are too fresh for statistics (it
# otherwise guessed a few hundred rows per session and sorted everything after ``after``).
_CHUNK_SQL: Final = (
    "SELECT table_id, "
    + key_text_sql("table_id", "key_bytes", "$4")
    + ", bundle_seq, payload_wire::text FROM sync.snapshot_session_rows "
    "WHERE snapshot_id = $1 AND row_ordinal > $2 AND row_ordinal <= $5"
    " ORDER BY row_ordinal LIMIT $3"
)


async def cleanup_expired_snapshot_sessions(engine: AsyncEngine) -> int:
    """Delete every expired session (all users; rows cascade); returns how many went.

    Runs in its own short transaction: doing it inside a REPEATABLE READ snapshot creation
    would make two concurrent creators fail with serialization errors over the same expired row.
    """
    async with engine.begin() as conn:
        deleted = (await conn.execute(_CLEANUP_SQL)).rowcount
    if deleted:
        _log.info("removed %d expired snapshot session(s)", deleted)
    return int(deleted)


async def create_snapshot_session(
    service: SyncService,
    actor: ActorLike,
    request: SnapshotSessionCreateRequest | None = None,
) -> SnapshotSession:
    """Freeze the actor's scope into a new snapshot session, optionally rotating its source.

    Everything (rotation, ``snapshot_bundle_seq``, rows) happens in one REPEATABLE READ
    transaction, so the rows are exactly the state after bundle ``snapshot_bundle_seq``. Unlike
    Go, the transaction holds the per-user advisory lock: commits of the same user wait for it
    instead of making it fail with a serialization error (see :func:`locked_repeatable_read`);
    other users are unaffected. Raises :class:`ScopeUninitializedError` /
    :class:`ScopeInitializingError`; for a rotation :class:`SnapshotSessionInvalidError`,
    :class:`SourceReplacementInvalidError` or :class:`SourceRetiredError`; and
    :class:`SnapshotSessionCreateFailedError` when row_state and the live tables disagree or a
    configured row/byte limit is exceeded (the rotation is then rolled back too).
    """
    require_actor(actor, need_source=False)
    rotation = None
    if request is not None and request.source_replacement is not None:
        rotation = validate_source_replacement(request.source_replacement, actor.source_id)
    config = service.config
    snapshot_id = uuid.uuid4()

    async with service.operation():
        await cleanup_expired_snapshot_sessions(service.engine)
        async with locked_repeatable_read(service.engine, actor.user_id) as conn:
            scope = require_initialized(await read_scope(conn, actor.user_id), actor.user_id)
            if rotation is not None:
                await apply_source_replacement(conn, actor.user_id, scope.user_pk, rotation)
            max_rows = config.max_rows_per_snapshot_session
            if max_rows > 0:
                # Cheap early refusal before copying rows that would be thrown away.
                _check_limit("row_count", await count_live_row_state(conn, scope.user_pk), max_rows)
            expires_at = (
                await conn.execute(
                    _INSERT_SESSION_SQL,
                    {
                        "snapshot_id": snapshot_id,
                        "user_pk": scope.user_pk,
                        "bundle_seq": scope.head_bundle_seq,
                        "ttl": config.snapshot_session_ttl.total_seconds(),
                    },
                )
            ).scalar_one()
            totals = await materialize_snapshot_rows(
                conn,
                service.runtime,
                snapshot_id=snapshot_id,
                user_id=actor.user_id,
                user_pk=scope.user_pk,
            )
            _check_limit("row_count", totals.row_count, max_rows)
            _check_limit("byte_count", totals.byte_count, config.max_bytes_per_snapshot_session)
            await conn.execute(
                _SET_TOTALS_SQL,
                {
                    "snapshot_id": snapshot_id,
                    "row_count": totals.row_count,
                    "byte_count": totals.byte_count,
                },
            )
    _log.info(
        "snapshot %s for user %s at bundle %d: %d rows, %d bytes",
        snapshot_id, actor.user_id, scope.head_bundle_seq, totals.row_count, totals.byte_count,
        extra={
            "user": actor.user_id,
            "source_id": actor.source_id,
            "snapshot_id": str(snapshot_id),
            "bundle_seq": scope.head_bundle_seq,
            "rows": totals.row_count,
        },
    )
    return SnapshotSession(
        snapshot_id=str(snapshot_id),
        snapshot_bundle_seq=scope.head_bundle_seq,
        row_count=totals.row_count,
        byte_count=totals.byte_count,
        expires_at=format_timestamp(expires_at),
    )


def _check_limit(dimension: str, actual: int, limit: int) -> None:
    # The contract maps an exceeded limit to 500 snapshot_session_create_failed (§11.16).
    if limit > 0 and actual > limit:
        raise SnapshotSessionCreateFailedError(
            f"snapshot session {dimension} {actual} exceeds limit {limit}"
        )


def _session_uuid(snapshot_id: str) -> uuid.UUID:
    """The session id; a value that is no UUID cannot name a session (404, not Go's 500)."""
    if not snapshot_id:
        raise SnapshotChunkInvalidError("snapshot_id must be provided")
    try:
        return uuid.UUID(snapshot_id)
    except ValueError:
        raise SnapshotSessionNotFoundError(
            f"snapshot session {snapshot_id} was not found"
        ) from None


def _check_owner(snapshot_id: str, owner: str, actor: ActorLike) -> None:
    if owner != actor.user_id:
        raise SnapshotSessionForbiddenError(
            f"snapshot session {snapshot_id} does not belong to the authenticated user"
        )


async def get_snapshot_chunk(
    service: SyncService,
    actor: ActorLike,
    snapshot_id: str,
    *,
    after_row_ordinal: int | None = None,
    max_rows: int | None = None,
) -> SnapshotChunkResponse:
    """Rows ``after_row_ordinal + 1 ...`` (1-based) of a session, at most ``max_rows``.

    ``next_row_ordinal = after_row_ordinal + len(rows)``. ``max_rows`` defaults to the configured
    chunk size and is clamped to the maximum. Raises :class:`SnapshotChunkInvalidError`,
    :class:`SnapshotSessionNotFoundError`, :class:`SnapshotSessionForbiddenError` (another
    user's session) or :class:`SnapshotSessionExpiredError`; in that order of checks.
    """
    after, limit, session_id = _chunk_window(
        service, actor, snapshot_id, after_row_ordinal, max_rows
    )
    runtime = service.runtime
    async with service.operation(), read_transaction(service.engine, read_only=True) as conn:
        bundle_seq = await _open_session(conn, snapshot_id, session_id, actor)
        raw = await driver_connection(conn)
        records = await raw.fetch(
            _CHUNK_SQL,
            session_id,
            after,
            limit + 1,
            uuid_table_ids(runtime.tables),
            ordinal_bound(after, limit + 1),
        )

    by_id = runtime.by_id
    rows: list[SnapshotRow] = []
    for table_id, key, row_version, payload in records[:limit]:
        table = by_id[table_id]
        rows.append(
            SnapshotRow(
                schema=table.schema,
                table=table.table,
                key={table.key_column: key},
                row_version=row_version,
                payload=Raw(payload),
            )
        )
    return SnapshotChunkResponse(
        snapshot_id=snapshot_id,
        snapshot_bundle_seq=bundle_seq,
        rows=rows,
        next_row_ordinal=after + len(rows),
        has_more=len(records) > limit,
    )


async def get_snapshot_chunk_encoded(
    service: SyncService,
    actor: ActorLike,
    snapshot_id: str,
    *,
    after_row_ordinal: int | None = None,
    max_rows: int | None = None,
) -> SnapshotChunkWire:
    """:func:`get_snapshot_chunk` rendered to wire JSON in SQL: same checks, same bytes.

    Rows never become Python objects; the HTTP route sends this. ``next_row_ordinal - after``
    is the number of rows in the chunk.
    """
    after, limit, session_id = _chunk_window(
        service, actor, snapshot_id, after_row_ordinal, max_rows
    )
    runtime = service.runtime
    async with service.operation(), read_transaction(service.engine, read_only=True) as conn:
        bundle_seq = await _open_session(conn, snapshot_id, session_id, actor)
        raw = await driver_connection(conn)
        record = await raw.fetchrow(
            ENCODED_CHUNK_SQL, session_id, after, *encoded_chunk_params(runtime, after, limit)
        )
    chunk, _ = build_encoded_chunk(snapshot_id, bundle_seq, after, record)
    return chunk


def _chunk_window(
    service: SyncService,
    actor: ActorLike,
    snapshot_id: str,
    after_row_ordinal: int | None,
    max_rows: int | None,
) -> tuple[int, int, uuid.UUID]:
    """The validated ``after``, the clamped row limit and the session id of a chunk request."""
    require_actor(actor, need_source=False)
    config = service.config
    after = 0 if after_row_ordinal is None else after_row_ordinal
    if after < 0:
        raise SnapshotChunkInvalidError("after_row_ordinal must be >= 0")
    if max_rows is None:
        max_rows = config.default_rows_per_snapshot_chunk
    if max_rows <= 0:
        raise SnapshotChunkInvalidError("max_rows must be > 0")
    session_id = _session_uuid(snapshot_id)
    return after, min(max_rows, config.max_rows_per_snapshot_chunk), session_id


async def _open_session(
    conn: AsyncConnection, snapshot_id: str, session_id: uuid.UUID, actor: ActorLike
) -> int:
    """The session's ``snapshot_bundle_seq`` once it exists, is the actor's and is unexpired."""
    session = (await conn.execute(_SESSION_SQL, {"snapshot_id": session_id})).one_or_none()
    if session is None:
        raise SnapshotSessionNotFoundError(f"snapshot session {snapshot_id} was not found")
    _check_owner(snapshot_id, session.user_id, actor)
    if session.expired:
        raise SnapshotSessionExpiredError(
            f"snapshot session {snapshot_id} has expired; start a new snapshot session"
        )
    return int(session.snapshot_bundle_seq)


async def delete_snapshot_session(
    service: SyncService, actor: ActorLike, snapshot_id: str
) -> None:
    """Delete one of the actor's sessions (rows cascade); expiry is not checked.

    Raises :class:`SnapshotSessionNotFoundError` or :class:`SnapshotSessionForbiddenError`.
    """
    require_actor(actor, need_source=False)
    session_id = _session_uuid(snapshot_id)
    async with service.operation(), service.engine.begin() as conn:
        owner = (
            await conn.execute(_SESSION_FOR_DELETE_SQL, {"snapshot_id": session_id})
        ).scalar_one_or_none()
        if owner is None:
            raise SnapshotSessionNotFoundError(f"snapshot session {snapshot_id} was not found")
        _check_owner(snapshot_id, owner, actor)
        await conn.execute(_DELETE_SQL, {"snapshot_id": session_id})
