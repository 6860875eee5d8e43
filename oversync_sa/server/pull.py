"""``GET /sync/pull`` (SERVER.md §6.2): complete committed bundles after a checkpoint.

A page is the scope row (head and retained floor) plus one page query. The page query is a
single statement, so every bundle it returns is complete: a bundle committed while it runs is
either entirely visible or not at all. The client freezes the ceiling across pages: the first
page answers ``stable_bundle_seq`` (the head), later pages send it back as
``target_bundle_seq`` and never see bundles above it.

:func:`pull` reads both in one REPEATABLE READ, READ ONLY transaction. :func:`pull_encoded`
(the HTTP path) runs them as two autocommit statements, two round trips instead of four
(``BEGIN`` and ``COMMIT`` cost as much as the reads on a small pull): bundles up to the head
read first are committed and never change, and bundles are gap-free per user, so the only
thing that can happen in between is retention raising the floor and deleting bundles the page
would have started with. The page query therefore reads the floor again in its own snapshot,
and the §6.2 floor checks run again with it: a page that could have missed pruned bundles
answers ``history_pruned``, exactly as it would have a moment later.

A page is read with a single query, in one of two shapes: :func:`pull` builds the wire Structs
(the stored canonical payload text goes in as :class:`msgspec.Raw` without being parsed), and
:func:`pull_encoded` lets PostgreSQL render the page's JSON (:mod:`.pull_encoded`), which the
HTTP layer sends as is; both give the same bytes on the wire.

Stage timings (§7.5, operation ``"pull"``) map Go's stages onto this structure:
``total`` (the whole call), ``transaction`` (the read transaction), ``retained_floor_check``
and ``resolve_stable_bundle_seq`` (in-memory checks on the scope row read first),
``list_bundle_seqs`` (the page query: it lists the page's bundle_seqs *and* reads their rows in
one statement, so the database's loading time is in this stage; count = bundles listed, with
the look-ahead one) and ``load_bundles`` (building the response from that result, after the
transaction; count = bundles returned). ``total`` and ``transaction`` count the bundles
returned too (Go reports ``max_bundles`` there), the two checks count 1. A caught-up pull
(nothing after the checkpoint) runs no page query and records neither of the last two, as in
Go. The read is never retried, so ``attempt`` is always 1.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.errors import (
    HistoryPrunedError,
    InvalidRequestError,
    PullFailedError,
    ServiceUnavailableError,
)
from oversync_sa.server import fastsql
from oversync_sa.server.pull_encoded import (
    ENCODED_PAGE_SQL,
    EncodedPullPage,
    build_encoded_page,
    encoded_page_params,
)
from oversync_sa.server.read_support import (
    ActorLike,
    bundle_row,
    key_text_sql,
    read_transaction,
    require_actor,
    uuid_table_ids,
)
from oversync_sa.server.runtime_info import SyncRuntime
from oversync_sa.server.scope import read_scope, require_initialized
from oversync_sa.server.stages import StageClock, stage_clock
from oversync_sa.wire.models import Bundle, BundleRow, PullResponse

if TYPE_CHECKING:
    from oversync_sa.server.service import SyncService

__all__ = [
    "DEFAULT_MAX_BUNDLES",
    "MAX_BUNDLES_PER_PULL",
    "EncodedPullPage",
    "check_retained_floor",
    "pull",
    "pull_encoded",
    "resolve_stable_bundle_seq",
]

_log = logging.getLogger("oversync_sa.server.pull")

#: ``max_bundles`` when none (or a non-positive one) is given.
DEFAULT_MAX_BUNDLES: Final = 1000
#: Upper clamp of ``max_bundles``; also advertised by capabilities.
MAX_BUNDLES_PER_PULL: Final = 5000

_COUNT_PRUNED_SQL: Final = text("SELECT nextval('sync.history_pruned_error_seq')")
# Rejections because the service is shutting down are not stage errors (§7.5).
_NOT_ERRORS: Final = (ServiceUnavailableError,)

# One page = up to $4 whole bundles with all their rows. ``picked`` looks one bundle further
# only to answer has_more; that extra bundle's rows are never read. The LEFT JOIN keeps a
# bundle whose rows are missing visible, so the row-count check fails it instead of skipping it.
_STRUCT_PAGE_SQL: Final = (
    "WITH picked AS ("
    " SELECT bundle_seq FROM sync.bundle_log"
    " WHERE user_pk = $1 AND bundle_seq > $2 AND bundle_seq <= $3"
    " ORDER BY bundle_seq LIMIT $4 + 1),"
    " page AS (SELECT bundle_seq FROM picked ORDER BY bundle_seq LIMIT $4)"
    " SELECT b.bundle_seq, b.source_id, b.source_bundle_id, b.row_count,"
    " encode(b.bundle_hash, 'hex'), (SELECT count(*) FROM picked),"
    " r.table_id, " + key_text_sql("r.table_id", "r.key_bytes", "$5") + ","
    " r.op_code, r.payload_wire::text"
    " FROM page p"
    " JOIN sync.bundle_log b ON b.user_pk = $1 AND b.bundle_seq = p.bundle_seq"
    " LEFT JOIN sync.bundle_rows r ON r.user_pk = $1 AND r.bundle_seq = p.bundle_seq"
    " ORDER BY b.bundle_seq, r.row_ordinal"
)

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


def check_retained_floor(floor: int, after: int, target: int) -> None:
    """§6.2: a positive ``after`` or ``target`` at or below the floor is pruned history."""
    if after > 0 and after <= floor:
        raise HistoryPrunedError(
            f"after_bundle_seq {after} is at or below the retained floor {floor}"
        )
    if target > 0 and target <= floor:
        raise HistoryPrunedError(
            f"target_bundle_seq {target} is at or below the retained floor {floor}"
        )


def _stable_ceiling(head: int, floor: int, target: int) -> int:
    stable = target if target > 0 else head
    if stable > 0 and stable <= floor:
        raise HistoryPrunedError(
            f"stable bundle_seq {stable} is at or below the retained floor {floor}"
        )
    return stable


def resolve_stable_bundle_seq(head: int, floor: int, after: int, target: int) -> int:
    """The frozen ceiling of this pull, after the §6.2 floor checks.

    A positive ``after`` or ``target`` at or below the floor is pruned history. A target beyond
    the head is honoured as given (the client's frozen ceiling). ``after == 0`` alone never trips
    the floor check (it silently starts above the floor), but an effective ceiling at or below
    the floor does.
    """
    check_retained_floor(floor, after, target)
    return _stable_ceiling(head, floor, target)


class _PageShape(Protocol[R_co]):
    """How one page is queried and turned into a response."""

    def query(self, runtime: SyncRuntime) -> tuple[str, tuple[Any, ...]]:
        """The page SQL (``$1..$4`` fixed) and its further parameters."""
        ...

    def listed(self, records: list[Any]) -> int:
        """How many bundles the page query listed, look-ahead included."""
        ...

    def empty(self, stable: int) -> R_co: ...

    #: True: scope row and page query share a REPEATABLE READ transaction; False: the page
    #: query re-reads the floor (:meth:`page_floor`) and both run as autocommit statements.
    needs_transaction: bool

    def page_floor(self, records: list[Any]) -> int | None:
        """The retained floor the page query read (``None``: the user's state row is gone)."""
        ...

    def build(
        self, stable: int, records: list[Any], runtime: SyncRuntime
    ) -> tuple[R_co, int]:
        """The response and how many bundles it holds."""
        ...


class _Structs:
    # An empty page has no row to carry the floor.
    needs_transaction = True

    def query(self, runtime: SyncRuntime) -> tuple[str, tuple[Any, ...]]:
        return _STRUCT_PAGE_SQL, (uuid_table_ids(runtime.tables),)

    def listed(self, records: list[Any]) -> int:
        return int(records[0][5]) if records else 0

    def empty(self, stable: int) -> PullResponse:
        return PullResponse(stable_bundle_seq=stable, bundles=[], has_more=False)

    def page_floor(self, records: list[Any]) -> int | None:
        raise NotImplementedError("the struct page is read in one transaction")

    def build(
        self, stable: int, records: list[Any], runtime: SyncRuntime
    ) -> tuple[PullResponse, int]:
        bundles = _assemble(records, runtime)
        has_more = self.listed(records) > len(bundles)
        return PullResponse(stable_bundle_seq=stable, bundles=bundles, has_more=has_more), len(
            bundles
        )


class _Encoded:
    needs_transaction = False

    # The page query aggregates the whole page into one row.
    def query(self, runtime: SyncRuntime) -> tuple[str, tuple[Any, ...]]:
        return ENCODED_PAGE_SQL, encoded_page_params(runtime)

    def listed(self, records: list[Any]) -> int:
        return int(records[0][0]) if records else 0

    def empty(self, stable: int) -> EncodedPullPage:
        return build_encoded_page(stable, None)

    def page_floor(self, records: list[Any]) -> int | None:
        # The page is aggregated into exactly one row, also when it is empty; NULL when the
        # user's state row is gone.
        value = records[0][8]
        return None if value is None else int(value)

    def build(
        self, stable: int, records: list[Any], runtime: SyncRuntime
    ) -> tuple[EncodedPullPage, int]:
        page = build_encoded_page(stable, records[0] if records else None)
        return page, page.bundle_count


_STRUCTS: Final = _Structs()
_ENCODED: Final = _Encoded()


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
    :class:`InvalidRequestError`; a bundle whose stored rows do not match its ``row_count``
    raises :class:`PullFailedError`.
    """
    return await _pull(
        service, actor, after_bundle_seq, max_bundles, target_bundle_seq, _STRUCTS
    )


async def pull_encoded(
    service: SyncService,
    actor: ActorLike,
    *,
    after_bundle_seq: int = 0,
    max_bundles: int = DEFAULT_MAX_BUNDLES,
    target_bundle_seq: int = 0,
) -> EncodedPullPage:
    """:func:`pull` with the page rendered to wire JSON by PostgreSQL (same rules, same errors).

    Encoding ``result.wire`` gives byte for byte what encoding :func:`pull`'s
    :class:`PullResponse` gives; rows are never built as Python objects.
    """
    return await _pull(
        service, actor, after_bundle_seq, max_bundles, target_bundle_seq, _ENCODED
    )


async def _pull(
    service: SyncService,
    actor: ActorLike,
    after: int,
    max_bundles: int,
    target: int,
    shape: _PageShape[R],
) -> R:
    config = service.config
    clock = stage_clock("pull", config.stage_metrics, config.log_stage_timings)
    with clock.stage("total", expected=_NOT_ERRORS) as total:
        require_actor(actor, need_source=False)
        if after < 0:
            raise InvalidRequestError("after_bundle_seq must be >= 0")
        if target < 0:
            raise InvalidRequestError("target_bundle_seq must be >= 0")
        if max_bundles <= 0:
            max_bundles = DEFAULT_MAX_BUNDLES
        max_bundles = min(max_bundles, MAX_BUNDLES_PER_PULL)

        async with service.operation():
            try:
                response, bundles = await _pull_page(
                    service, clock, actor.user_id, after, max_bundles, target, shape
                )
            except HistoryPrunedError:
                await _count_history_pruned(service)
                raise
        total.value = bundles
        return response


async def _pull_page(
    service: SyncService,
    clock: StageClock,
    user_id: str,
    after: int,
    max_bundles: int,
    target: int,
    shape: _PageShape[R],
) -> tuple[R, int]:
    runtime = service.runtime
    with clock.stage("transaction", expected=_NOT_ERRORS) as transaction:
        async with _page_connection(service, in_transaction=shape.needs_transaction) as conn:
            scope = require_initialized(await read_scope(conn, user_id), user_id)
            floor = scope.retained_bundle_floor
            with clock.stage("retained_floor_check") as stage:
                stage.value = 1
                check_retained_floor(floor, after, target)
            with clock.stage("resolve_stable_bundle_seq") as stage:
                stage.value = 1
                stable = _stable_ceiling(scope.head_bundle_seq, floor, target)
            if after >= stable:
                return shape.empty(stable), 0
            sql, params = shape.query(runtime)
            with clock.stage("list_bundle_seqs", expected=_NOT_ERRORS) as listing:
                raw: Any = await fastsql.driver(conn)
                records = await raw.fetch(
                    sql, scope.user_pk, max(after, floor), stable, max_bundles, *params
                )
                listing.value = listed = shape.listed(records)
            if not shape.needs_transaction:
                page_floor = shape.page_floor(records)
                if page_floor is None:
                    # The scope's rows vanished between the statements (a reset).
                    require_initialized(None, user_id)  # raises ScopeUninitializedError
                    raise AssertionError("unreachable")  # pragma: no cover
                if page_floor != floor:
                    # Retention ran between the two statements (see the module docstring).
                    resolve_stable_bundle_seq(scope.head_bundle_seq, page_floor, after, target)
        transaction.value = min(listed, max_bundles)
    with clock.stage("load_bundles") as loading:
        response, bundles = shape.build(stable, records, runtime)
        loading.value = bundles
    _log.debug(
        "pull user=%s after=%d stable=%d bundles=%d listed=%d",
        user_id, after, stable, bundles, listed,
    )
    return response, bundles


@asynccontextmanager
async def _page_connection(
    service: SyncService, *, in_transaction: bool
) -> AsyncIterator[AsyncConnection]:
    if in_transaction:
        async with read_transaction(service.engine, read_only=True) as conn:
            yield conn
        return
    async with service.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


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
        if record[6] is not None:  # None: the bundle has no stored rows at all
            rows.append(
                bundle_row(by_id[record[6]], record[7], record[8], record[0], record[9])
            )
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
