"""``GET /sync/pull`` (SERVER.md §6.2): complete committed bundles after a checkpoint.

Everything runs in one REPEATABLE READ, READ ONLY transaction, so the head, the floor and every
returned bundle come from one MVCC snapshot: a bundle committed while the reader runs is either
entirely visible or not at all. The client freezes the ceiling across pages: the first page
answers ``stable_bundle_seq`` (the head), later pages send it back as ``target_bundle_seq`` and
never see bundles above it.

Bundles and their rows are read with a single query per page; the stored canonical payload text
goes to the response as :class:`msgspec.Raw` without being parsed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import text

from oversync_sa.errors import HistoryPrunedError, InvalidRequestError, PullFailedError
from oversync_sa.server.read_support import (
    ActorLike,
    bundle_row,
    driver_connection,
    key_text_sql,
    read_transaction,
    require_actor,
    uuid_table_ids,
)
from oversync_sa.server.runtime_info import SyncRuntime
from oversync_sa.server.scope import read_scope, require_initialized
from oversync_sa.wire.models import Bundle, BundleRow, PullResponse

if TYPE_CHECKING:
    from oversync_sa.server.service import SyncService

__all__ = ["DEFAULT_MAX_BUNDLES", "MAX_BUNDLES_PER_PULL", "pull", "resolve_stable_bundle_seq"]

_log = logging.getLogger("oversync_sa.server.pull")

#: ``max_bundles`` when none (or a non-positive one) is given.
DEFAULT_MAX_BUNDLES: Final = 1000
#: Upper clamp of ``max_bundles``; also advertised by capabilities.
MAX_BUNDLES_PER_PULL: Final = 5000

_COUNT_PRUNED_SQL: Final = text("SELECT nextval('sync.history_pruned_error_seq')")

# One page = up to $4 whole bundles with all their rows. ``picked`` looks one bundle further
# only to answer has_more; that extra bundle's rows are never read.
_PAGE_SQL: Final = (
    "WITH picked AS ("
    " SELECT bundle_seq FROM sync.bundle_log"
    " WHERE user_pk = $1 AND bundle_seq > $2 AND bundle_seq <= $3"
    " ORDER BY bundle_seq LIMIT $4 + 1),"
    " page AS (SELECT bundle_seq FROM picked ORDER BY bundle_seq LIMIT $4)"
    " SELECT b.bundle_seq, b.source_id, b.source_bundle_id, b.row_count,"
    " encode(b.bundle_hash, 'hex'), (SELECT count(*) > $4 FROM picked),"
    " r.table_id, " + key_text_sql("r.table_id", "r.key_bytes", "$5") + ","
    " r.op_code, r.payload_wire::text"
    " FROM page p"
    " JOIN sync.bundle_log b ON b.user_pk = $1 AND b.bundle_seq = p.bundle_seq"
    " JOIN sync.bundle_rows r ON r.user_pk = $1 AND r.bundle_seq = p.bundle_seq"
    " ORDER BY r.bundle_seq, r.row_ordinal"
)


def resolve_stable_bundle_seq(head: int, floor: int, after: int, target: int) -> int:
    """The frozen ceiling of this pull, after the §6.2 floor checks.

    A positive ``after`` or ``target`` at or below the floor is pruned history. A target beyond
    the head is honoured as given (the client's frozen ceiling). ``after == 0`` alone never trips
    the floor check (it silently starts above the floor), but an effective ceiling at or below
    the floor does.
    """
    if after > 0 and after <= floor:
        raise HistoryPrunedError(
            f"after_bundle_seq {after} is at or below the retained floor {floor}"
        )
    if target > 0 and target <= floor:
        raise HistoryPrunedError(
            f"target_bundle_seq {target} is at or below the retained floor {floor}"
        )
    stable = target if target > 0 else head
    if stable > 0 and stable <= floor:
        raise HistoryPrunedError(
            f"stable bundle_seq {stable} is at or below the retained floor {floor}"
        )
    return stable


async def pull(
    service: SyncService,
    actor: ActorLike,
    *,
    after_bundle_seq: int = 0,
    max_bundles: int = DEFAULT_MAX_BUNDLES,
    target_bundle_seq: int = 0,
) -> PullResponse:
    """Up to ``max_bundles`` complete bundles with ``after < bundle_seq <= stable``.

    ``max_bundles`` is clamped into ``1..5000`` (non-positive means the default); range
    validation with a 400 is the HTTP layer's job. Raises :class:`ScopeUninitializedError` /
    :class:`ScopeInitializingError` unless the scope is initialized, and
    :class:`HistoryPrunedError` for checkpoints at or below the retained floor (each of those
    also bumps ``sync.history_pruned_error_seq``). Negative cursors raise
    :class:`InvalidRequestError`.
    """
    require_actor(actor, need_source=False)
    if after_bundle_seq < 0:
        raise InvalidRequestError("after_bundle_seq must be >= 0")
    if target_bundle_seq < 0:
        raise InvalidRequestError("target_bundle_seq must be >= 0")
    if max_bundles <= 0:
        max_bundles = DEFAULT_MAX_BUNDLES
    max_bundles = min(max_bundles, MAX_BUNDLES_PER_PULL)

    async with service.operation():
        try:
            return await _pull_page(
                service, actor.user_id, after_bundle_seq, max_bundles, target_bundle_seq
            )
        except HistoryPrunedError:
            await _count_history_pruned(service)
            raise


async def _pull_page(
    service: SyncService, user_id: str, after: int, max_bundles: int, target: int
) -> PullResponse:
    runtime = service.runtime
    async with read_transaction(service.engine, read_only=True) as conn:
        scope = require_initialized(await read_scope(conn, user_id), user_id)
        stable = resolve_stable_bundle_seq(
            scope.head_bundle_seq, scope.retained_bundle_floor, after, target
        )
        if after >= stable:
            return PullResponse(stable_bundle_seq=stable, bundles=[], has_more=False)
        raw = await driver_connection(conn)
        records = await raw.fetch(
            _PAGE_SQL,
            scope.user_pk,
            max(after, scope.retained_bundle_floor),
            stable,
            max_bundles,
            uuid_table_ids(runtime.tables),
        )
    bundles = _assemble(records, runtime)
    has_more = bool(records[0][5]) if records else False
    _log.debug(
        "pull user=%s after=%d stable=%d bundles=%d more=%s",
        user_id, after, stable, len(bundles), has_more,
    )
    return PullResponse(stable_bundle_seq=stable, bundles=bundles, has_more=has_more)


def _assemble(records: list[Any], runtime: SyncRuntime) -> list[Bundle]:
    """Group the bundle-ordered rows into bundles; a row-count mismatch fails closed."""
    by_id = runtime.by_id
    bundles: list[Bundle] = []
    rows: list[BundleRow] = []
    current: Any = None
    for record in records:
        if current is None or record[0] != current[0]:
            if current is not None:
                bundles.append(_bundle(current, rows))
            current, rows = record, []
        rows.append(bundle_row(by_id[record[6]], record[7], record[8], record[0], record[9]))
    if current is not None:
        bundles.append(_bundle(current, rows))
    return bundles


def _bundle(head: Any, rows: list[BundleRow]) -> Bundle:
    bundle_seq, source_id, source_bundle_id, row_count, bundle_hash = head[:5]
    if len(rows) != row_count:
        # Never hand out a partial bundle: its hash would not verify on the client anyway.
        raise PullFailedError(
            f"bundle {bundle_seq} has {len(rows)} stored rows, bundle_log says {row_count}"
        )
    return Bundle(
        bundle_seq=bundle_seq,
        source_id=source_id,
        source_bundle_id=source_bundle_id,
        row_count=row_count,
        bundle_hash=bundle_hash,
        rows=rows,
    )


async def _count_history_pruned(service: SyncService) -> None:
    """Bump the ``history_pruned`` counter outside the failed read; never fails the request."""
    try:
        async with service.engine.begin() as conn:
            await conn.execute(_COUNT_PRUNED_SQL)
    except Exception:
        _log.warning("could not record a history_pruned event", exc_info=True)
