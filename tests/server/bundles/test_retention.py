"""Retention after each commit and batched maintenance pruning (§7.1, §11.27)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import ServiceConfig, SyncService
from oversync_sa.server.retention import PruneProgress, apply_retention, prune
from tests.server.bundles._support import REGISTERED, exec_write, fetch, make_service, sql


async def _history(engine: AsyncEngine, user: str) -> tuple[int, list[int]]:
    floor = await fetch(
        engine, "SELECT retained_bundle_floor FROM sync.user_state WHERE user_id = :u", u=user
    )
    seqs = await fetch(
        engine,
        "SELECT l.bundle_seq FROM sync.bundle_log l JOIN sync.user_state u USING (user_pk) "
        "WHERE u.user_id = :u ORDER BY 1",
        u=user,
    )
    return int(floor[0][0]), [int(r[0]) for r in seqs]


async def test_window_one_keeps_only_the_newest_bundle(pg_engine: AsyncEngine) -> None:
    service = await make_service(pg_engine, retained_bundles_per_user=1)
    for n in range(3):
        await exec_write(service, "alice", sql(f"INSERT INTO business.tags (code) VALUES ('{n}')"))
    assert await _history(pg_engine, "alice") == (2, [3])
    # Pruned bundles' rows are gone; row_state and the source watermark are untouched.
    rows = await fetch(pg_engine, "SELECT DISTINCT bundle_seq FROM sync.bundle_rows")
    assert [r[0] for r in rows] == [3]
    states = await fetch(pg_engine, "SELECT bundle_seq FROM sync.row_state ORDER BY 1")
    assert [r[0] for r in states] == [1, 2, 3]
    mark = await fetch(pg_engine, "SELECT max_committed_source_bundle_id FROM sync.source_state")
    assert mark[0][0] == 3


async def test_floor_moves_at_most_one_batch_per_commit_and_prune_catches_up(
    pg_engine: AsyncEngine,
) -> None:
    service = await make_service(pg_engine)  # default window 10000: nothing pruned yet
    for user in ("alice", "bob"):
        for n in range(6):
            await exec_write(service, user, sql(f"INSERT INTO business.tags (code) VALUES ('{n}')"))
    assert await _history(pg_engine, "alice") == (0, [1, 2, 3, 4, 5, 6])

    narrow = SyncService(
        pg_engine,
        ServiceConfig(
            registered_tables=REGISTERED, retained_bundles_per_user=2, retention_prune_batch_size=1
        ),
    )
    await narrow.bootstrap()
    await exec_write(narrow, "alice", sql("INSERT INTO business.tags (code) VALUES ('x')"))
    assert await _history(pg_engine, "alice") == (1, [2, 3, 4, 5, 6, 7])

    reports: list[PruneProgress] = []
    total = await prune(pg_engine, narrow.config, users_per_transaction=1, progress=reports.append)
    assert await _history(pg_engine, "alice") == (5, [6, 7])
    assert await _history(pg_engine, "bob") == (4, [5, 6])
    assert total == reports[-1]
    assert total.floors_advanced == 4 + 4
    assert total.bundles_deleted == 8
    assert [r.transactions for r in reports] == list(range(1, total.transactions + 1))
    # Nothing left to do: a second run is a no-op.
    assert await prune(pg_engine, narrow.config) == PruneProgress(0, 0, 0)
    live = await fetch(pg_engine, "SELECT count(*) FROM sync.row_state")
    assert live[0][0] == 13


async def test_prune_stops_after_max_transactions(pg_engine: AsyncEngine) -> None:
    service = await make_service(pg_engine)
    for n in range(4):
        await exec_write(service, "alice", sql(f"INSERT INTO business.tags (code) VALUES ('{n}')"))
    config = ServiceConfig(
        registered_tables=REGISTERED, retained_bundles_per_user=1, retention_prune_batch_size=1
    )
    assert (await prune(pg_engine, config, max_transactions=2)).transactions == 2
    assert await _history(pg_engine, "alice") == (2, [3, 4])


async def test_invalid_arguments_are_rejected(service: SyncService) -> None:
    with pytest.raises(ValueError, match="users_per_transaction"):
        await prune(service.engine, service.config, users_per_transaction=0)
    async with service.engine.connect() as conn:
        with pytest.raises(ValueError, match="positive"):
            await apply_retention(conn, 1, window=0, batch=1)
