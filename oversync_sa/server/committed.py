"""``GET /sync/committed-bundles/{bundle_seq}/rows`` (SERVER.md §6.1).

A client replays its own just-committed bundle (or recovers after a crash) page by page. Two
ordinal conventions meet here: the wire cursor is 0-based (``after_row_ordinal`` = logical
ordinal of the last row already received) while ``sync.bundle_rows.row_ordinal`` is 1-based, so
wire ordinal ``n`` is storage ordinal ``n + 1``.

The endpoint reads any retained bundle of the caller's *user*, whatever source committed it, and
never checks scope state. Another user's ``bundle_seq`` simply does not exist for the caller
(404), which keeps scopes from learning anything about each other.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from sqlalchemy import text

from oversync_sa.errors import (
    CommittedBundleChunkInvalidError,
    CommittedBundleNotFoundError,
    CommittedBundleRowsFailedError,
    HistoryPrunedError,
)
from oversync_sa.server.read_support import (
    ActorLike,
    bundle_row,
    driver_connection,
    key_text_sql,
    read_transaction,
    require_actor,
    uuid_table_ids,
)
from oversync_sa.wire.models import CommittedBundleRowsResponse

if TYPE_CHECKING:
    from oversync_sa.server.service import SyncService

__all__ = ["fetch_committed_bundle_rows"]

_INT64_MAX: Final = 2**63 - 1

_log = logging.getLogger("oversync_sa.server.committed")

# The user, its floor and the bundle's metadata in one round trip. The LEFT JOIN tells "user
# unknown" (no row) apart from "bundle unknown" (NULL metadata).
_META_SQL: Final = text(
    "SELECT us.user_pk, us.retained_bundle_floor, bl.bundle_seq, bl.source_id, "
    "bl.source_bundle_id, bl.row_count, encode(bl.bundle_hash, 'hex') AS bundle_hash "
    "FROM sync.user_state us "
    "LEFT JOIN sync.bundle_log bl ON bl.user_pk = us.user_pk AND bl.bundle_seq = :bundle_seq "
    "WHERE us.user_id = :user_id"
)
_PAGE_SQL: Final = (
    "SELECT table_id, "
    + key_text_sql("table_id", "key_bytes", "$4")
    + ", op_code, payload_wire::text FROM sync.bundle_rows "
    "WHERE user_pk = $1 AND bundle_seq = $2 AND row_ordinal > $3 "
    "ORDER BY row_ordinal LIMIT $5"
)


async def fetch_committed_bundle_rows(
    service: SyncService,
    actor: ActorLike,
    bundle_seq: int,
    *,
    after_row_ordinal: int | None = None,
    max_rows: int | None = None,
) -> CommittedBundleRowsResponse:
    """One page of a committed bundle's rows, for the actor's own user.

    ``after_row_ordinal`` is the 0-based wire cursor (``None`` = from the first row);
    ``max_rows`` defaults to the configured chunk size and is clamped to the configured maximum.

    Raises :class:`CommittedBundleChunkInvalidError` for ``bundle_seq <= 0``, a negative cursor or
    ``max_rows <= 0``; :class:`HistoryPrunedError` when ``bundle_seq`` is at or below the retained
    floor (checked before existence, even if the rows still exist);
    :class:`CommittedBundleNotFoundError` when the user has no such bundle; and
    :class:`CommittedBundleRowsFailedError` when the user never connected.
    """
    require_actor(actor, need_source=True)
    config = service.config
    if bundle_seq <= 0:
        raise CommittedBundleChunkInvalidError("bundle_seq must be > 0")
    if after_row_ordinal is not None and after_row_ordinal < 0:
        raise CommittedBundleChunkInvalidError("after_row_ordinal must be >= 0")
    if max_rows is None:
        max_rows = config.default_rows_per_committed_bundle_chunk
    if max_rows <= 0:
        raise CommittedBundleChunkInvalidError("max_rows must be > 0")
    limit = min(max_rows, config.max_rows_per_committed_bundle_chunk)
    # Logical ordinal of the last row the client holds; -1 = nothing yet.
    last_held = -1 if after_row_ordinal is None else after_row_ordinal
    runtime = service.runtime

    async with service.operation(), read_transaction(service.engine, read_only=False) as conn:
        meta = (
            await conn.execute(_META_SQL, {"user_id": actor.user_id, "bundle_seq": bundle_seq})
        ).one_or_none()
        if meta is None:
            raise CommittedBundleRowsFailedError(
                f"no sync state for user {actor.user_id}; connect first"
            )
        user_pk, floor = int(meta.user_pk), int(meta.retained_bundle_floor)
        if bundle_seq <= floor:
            # Go's wording (HistoryPrunedError), so both servers answer alike.
            raise HistoryPrunedError(
                f"requested checkpoint {bundle_seq} is older than retained history floor "
                f"{floor} for user {actor.user_id}"
            )
        if meta.bundle_seq is None:
            raise CommittedBundleNotFoundError(f"committed bundle {bundle_seq} was not found")
        raw = await driver_connection(conn)
        records = await raw.fetch(
            _PAGE_SQL,
            user_pk,
            bundle_seq,
            # A cursor at the int64 maximum has nothing after it; unclamped, the storage ordinal
            # would not fit the bigint parameter (500 instead of an empty page).
            min(last_held + 1, _INT64_MAX),
            uuid_table_ids(runtime.tables),
            limit + 1,
        )

    has_more = len(records) > limit
    by_id = runtime.by_id
    rows = [
        bundle_row(by_id[r[0]], r[1], r[2], bundle_seq, r[3]) for r in records[:limit]
    ]
    next_ordinal = last_held + len(rows) if rows else (after_row_ordinal or 0)
    _log.debug(
        "committed rows user=%s seq=%d after=%s returned=%d more=%s",
        actor.user_id, bundle_seq, after_row_ordinal, len(rows), has_more,
    )
    return CommittedBundleRowsResponse(
        bundle_seq=bundle_seq,
        source_id=meta.source_id,
        source_bundle_id=int(meta.source_bundle_id),
        row_count=int(meta.row_count),
        bundle_hash=meta.bundle_hash,
        rows=rows,
        next_row_ordinal=next_ordinal,
        has_more=has_more,
    )
