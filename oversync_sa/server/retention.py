"""Retained-history window per user (SERVER.md §7.1).

Each committed bundle transaction advances the user's ``retained_bundle_floor`` so that at most
``retained_bundles_per_user`` bundles stay above it, moving it by at most
``retention_prune_batch_size`` per commit, and deletes the ``bundle_log`` rows at or below it
(``bundle_rows`` cascade). ``row_state``, ``source_state`` and business rows are never touched,
so conflict detection, snapshots and source sequencing are unaffected by pruning.

:func:`prune` runs the same policy as batched maintenance (cron, CLI) over all users, e.g. after
lowering the window, without waiting for each user's next commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from oversync_sa.server.config import ServiceConfig

__all__ = ["PruneProgress", "advance_floor_ctes", "apply_retention", "prune"]

_log = logging.getLogger("oversync_sa.server.retention")

def advance_floor_ctes(user_pk: str, window: str, batch: str) -> str:
    """The ``advanced`` and ``pruned`` CTEs of one user's retention step, given placeholders.

    The floor target is ``min(head - window, floor + batch)``; rows are only touched when it is
    above the current floor. Shared by :func:`apply_retention` and bundle finalisation, which
    runs it inside its persist statement (:mod:`.finalize`).
    """
    return (
        " advanced AS ("
        " UPDATE sync.user_state SET retained_bundle_floor = LEAST("
        f"   next_bundle_seq - 1 - {window}, retained_bundle_floor + {batch})"
        f" WHERE user_pk = {user_pk} AND next_bundle_seq - 1 - {window} > retained_bundle_floor"
        " RETURNING user_pk, retained_bundle_floor),"
        " pruned AS ("
        " DELETE FROM sync.bundle_log b USING advanced a"
        " WHERE b.user_pk = a.user_pk AND b.bundle_seq <= a.retained_bundle_floor"
        " RETURNING 1)"
    )


# Floor advance and history deletion in one statement.
_APPLY_SQL: Final = text(
    "WITH"
    + advance_floor_ctes(":user_pk", ":window", ":batch")
    + " SELECT (SELECT retained_bundle_floor FROM advanced), (SELECT count(*) FROM pruned)"
)

# Maintenance variant: up to :users users that are behind, skipping rows a writer holds.
_PRUNE_BATCH_SQL: Final = text(
    "WITH candidates AS ("
    " SELECT user_pk FROM sync.user_state"
    " WHERE next_bundle_seq - 1 - :window > retained_bundle_floor"
    " ORDER BY user_pk LIMIT :users FOR UPDATE SKIP LOCKED),"
    " advanced AS ("
    " UPDATE sync.user_state u SET retained_bundle_floor = LEAST("
    "   u.next_bundle_seq - 1 - :window, u.retained_bundle_floor + :batch)"
    " FROM candidates c WHERE u.user_pk = c.user_pk"
    " RETURNING u.user_pk, u.retained_bundle_floor),"
    " deleted AS ("
    " DELETE FROM sync.bundle_log b USING advanced a"
    " WHERE b.user_pk = a.user_pk AND b.bundle_seq <= a.retained_bundle_floor"
    " RETURNING 1)"
    " SELECT (SELECT count(*) FROM advanced), (SELECT count(*) FROM deleted)"
)


async def apply_retention(
    conn: AsyncConnection, user_pk: int, *, window: int, batch: int
) -> tuple[int | None, int]:
    """Advance one user's floor inside the caller's bundle transaction.

    Returns ``(new floor or None when it did not move, number of bundle_log rows deleted)``.
    ``window`` and ``batch`` must be positive (``ServiceConfig`` already applies the defaults).
    """
    if window <= 0 or batch <= 0:
        raise ValueError("retention window and batch must be positive")
    row = (
        await conn.execute(_APPLY_SQL, {"user_pk": user_pk, "window": window, "batch": batch})
    ).one()
    floor = None if row[0] is None else int(row[0])
    return floor, int(row[1])


@dataclass(frozen=True, slots=True)
class PruneProgress:
    """Cumulative totals reported after each maintenance transaction."""

    transactions: int
    floors_advanced: int
    bundles_deleted: int


async def prune(
    engine: AsyncEngine,
    config: ServiceConfig,
    *,
    users_per_transaction: int = 100,
    max_transactions: int | None = None,
    progress: Callable[[PruneProgress], None] | None = None,
) -> PruneProgress:
    """Bring every user's retained history down to the configured window.

    Works in short transactions, each advancing up to ``users_per_transaction`` users by at most
    ``retention_prune_batch_size`` sequence numbers, until no user is behind (or
    ``max_transactions`` ran). Users whose row a writer currently holds are skipped (``SKIP
    LOCKED``), so maintenance never stalls live traffic; their own commit applies the same policy,
    and the next run catches whatever is left. ``progress`` receives
    the running totals after every transaction.
    """
    if users_per_transaction <= 0:
        raise ValueError("users_per_transaction must be positive")
    params = {
        "window": config.retained_bundles_per_user,
        "batch": config.retention_prune_batch_size,
        "users": users_per_transaction,
    }
    totals = PruneProgress(0, 0, 0)
    while max_transactions is None or totals.transactions < max_transactions:
        async with engine.begin() as conn:
            advanced, deleted = (await conn.execute(_PRUNE_BATCH_SQL, params)).one()
        if not advanced:
            break
        totals = PruneProgress(
            totals.transactions + 1,
            totals.floors_advanced + int(advanced),
            totals.bundles_deleted + int(deleted),
        )
        _log.debug("retention prune progress: %s", totals)
        if progress is not None:
            progress(totals)
    return totals
