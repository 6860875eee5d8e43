"""The Go example schema (SERVER.md §10.1) bootstraps with the documented table ids."""

from __future__ import annotations

import sqlalchemy as sa

from oversync_sa.server import SyncService
from oversync_sa.server.runtime_schema import TABLE_CATALOG


async def test_example_schema_table_ids(example_service: SyncService) -> None:
    runtime = example_service.runtime
    ids = {t.table: t.table_id for t in runtime.tables}
    assert ids == {
        "categories": 1,
        "file_reviews": 2,
        "files": 3,
        "posts": 4,
        "team_members": 5,
        "teams": 6,
        "typed_rows": 7,
        "users": 8,
    }
    assert runtime.by_id[3].name == "business.files"
    assert runtime.table("business.users").key_kind == 1
    assert runtime.column_types["business.files"]["data"] == "bytea"
    async with example_service.engine.connect() as conn:
        rows = (await conn.execute(sa.select(TABLE_CATALOG).order_by("table_id"))).all()
    assert [tuple(r) for r in rows] == [
        (t.table_id, "business", t.table, "id", 1)
        for t in sorted(runtime.tables, key=lambda t: t.table_id)
    ]


async def test_example_dependency_order(example_service: SyncService) -> None:
    order = example_service.runtime.dependency_order
    assert order.index("business.users") < order.index("business.posts")
    assert order.index("business.files") < order.index("business.file_reviews")
    # the teams <-> team_members cycle is emitted together, sorted by name
    i = order.index("business.team_members")
    assert order[i : i + 2] == ("business.team_members", "business.teams")
