"""Measure how far retained floors trail heads, across all users, in one aggregate query.

The result is a fixed-size :class:`~oversync_sa.server.observer.RetentionLag` whatever the
number of users: the buckets are counted by PostgreSQL (``count(*) FILTER``), so neither the
query result nor a metric built from it grows with the user count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import ConfigurationError
from oversync_sa.server.observer import RetentionLag

__all__ = ["DEFAULT_LAG_BUCKETS", "measure_retention_lag"]

#: Upper bounds (bundles) of the lag buckets; the default window is 10000 bundles.
DEFAULT_LAG_BUCKETS: Final[tuple[int, ...]] = (
    0, 10, 100, 1000, 5000, 10000, 20000, 50000, 100000,
)

_LAG: Final = "greatest(next_bundle_seq - 1 - retained_bundle_floor, 0)"


def _query(bounds: Sequence[int]) -> str:
    buckets = "".join(f", count(*) FILTER (WHERE lag <= :b{i})" for i in range(len(bounds)))
    return (
        "SELECT count(*), coalesce(sum(lag), 0), coalesce(max(lag), 0),"
        f" count(*) FILTER (WHERE lag > :window){buckets}"
        f" FROM (SELECT {_LAG} AS lag FROM sync.user_state) AS lags"
    )


async def measure_retention_lag(
    engine: AsyncEngine, *, window: int, bounds: Sequence[int] = DEFAULT_LAG_BUCKETS
) -> RetentionLag:
    """Aggregate every user's ``head - retained_bundle_floor`` into :class:`RetentionLag`.

    ``window`` is the configured ``retained_bundles_per_user``; ``bounds`` must be strictly
    increasing non-negative integers. Reads ``sync.user_state`` only (one sequential scan).
    """
    ordered = tuple(int(b) for b in bounds)
    if not ordered or any(b < 0 for b in ordered) or list(ordered) != sorted(set(ordered)):
        raise ConfigurationError(
            f"retention lag buckets must be strictly increasing non-negative integers, "
            f"got {list(bounds)}"
        )
    params = {"window": window, **{f"b{i}": b for i, b in enumerate(ordered)}}
    async with engine.connect() as conn:
        row = (await conn.execute(text(_query(ordered)), params)).one()
    users, total, maximum, over_window, *counts = (int(v) for v in row)
    return RetentionLag(
        users=users,
        total_lag=total,
        max_lag=maximum,
        over_window=over_window,
        bucket_bounds=ordered,
        bucket_counts=tuple(counts),
    )
