"""Retained-floor lag: exact aggregates from sync.user_state, and series that do not grow."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import ConfigurationError
from oversync_sa.server.observer import RetentionLag
from tests.metrics._support import observed_service, sample

pytestmark = pytest.mark.postgres

WINDOW = 10
BOUNDS = (0, 10, 100, 1000, 5000, 10000, 20000, 50000, 100000)


def _lag(n: int) -> int:
    return n % 50


async def _add_users(engine: AsyncEngine, first: int, last: int) -> None:
    """Users ``u-first..u-last`` whose head - floor is ``n % 50`` (floor 2, never pruned)."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO sync.user_state (user_id, next_bundle_seq, retained_bundle_floor)"
                " SELECT 'u-' || g, g % 50 + 3, 2"
                " FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g"
            ),
            {"first": first, "last": last},
        )


def _lag_series(registry: CollectorRegistry) -> list[tuple[str, dict[str, str]]]:
    return [
        (s.name, s.labels)
        for family in registry.collect()
        if family.name.startswith(("oversync_retained_floor_lag", "oversync_retention"))
        for s in family.samples
    ]


async def test_lag_aggregates_are_exact(pg_engine: AsyncEngine) -> None:
    service, observer = await observed_service(pg_engine, retained_bundles_per_user=WINDOW)
    await _add_users(pg_engine, 1, 500)
    lags = [_lag(n) for n in range(1, 501)]

    measured = await service.measure_retention_lag()

    assert measured == RetentionLag(
        users=500,
        total_lag=sum(lags),
        max_lag=max(lags),
        over_window=sum(1 for lag in lags if lag > WINDOW),
        bucket_bounds=BOUNDS,
        bucket_counts=tuple(sum(1 for lag in lags if lag <= b) for b in BOUNDS),
    )
    registry = observer.registry
    assert sample(registry, "oversync_retained_floor_lag_max_bundles") == 49
    assert sample(registry, "oversync_retention_backlog_users") == measured.over_window
    assert sample(registry, "oversync_retained_floor_lag_bundles_bucket", le="0.0") == 10
    assert sample(registry, "oversync_retained_floor_lag_bundles_bucket", le="10.0") == 110
    assert sample(registry, "oversync_retained_floor_lag_bundles_bucket", le="+Inf") == 500
    assert sample(registry, "oversync_retained_floor_lag_bundles_gcount") == 500
    assert sample(registry, "oversync_retained_floor_lag_bundles_gsum") == sum(lags)


async def test_lag_series_do_not_grow_with_users(pg_engine: AsyncEngine) -> None:
    service, observer = await observed_service(pg_engine, retained_bundles_per_user=WINDOW)
    await _add_users(pg_engine, 1, 5)
    await service.measure_retention_lag()
    few = _lag_series(observer.registry)

    await _add_users(pg_engine, 6, 2000)
    measured = await service.measure_retention_lag()
    many = _lag_series(observer.registry)

    assert measured.users == 2000
    assert many == few  # the same series, only their values moved
    # Buckets (+Inf included), gcount, gsum, max and backlog: nothing per user.
    assert len(many) == len(BOUNDS) + 1 + 2 + 2
    assert not any(value.startswith("u-") for _, labels in many for value in labels.values())


async def test_lag_is_zero_before_anyone_synced(pg_engine: AsyncEngine) -> None:
    service, observer = await observed_service(pg_engine)
    measured = await service.measure_retention_lag(bounds=(5,))
    assert measured == RetentionLag(0, 0, 0, 0, (5,), (0,))
    assert sample(observer.registry, "oversync_retained_floor_lag_bundles_bucket", le="+Inf") == 0


@pytest.mark.parametrize("bounds", [(), (10, 5), (1, 1), (-1, 3)])
async def test_bad_buckets_are_a_configuration_error(
    pg_engine: AsyncEngine, bounds: tuple[int, ...]
) -> None:
    service, _ = await observed_service(pg_engine)
    with pytest.raises(ConfigurationError, match="retention lag buckets"):
        await service.measure_retention_lag(bounds=bounds)
