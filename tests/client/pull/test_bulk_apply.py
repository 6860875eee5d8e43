"""Bulk pull apply: multi-row statements, one driver hop per bundle, errors as SQLAlchemy's."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from oversync_sa.client.client import SyncClient
from oversync_sa.client.encoding import delete_sql, upsert_sql
from tests.client.lifecycle.fakes import CAPS, FakeServer, user_row

from .test_pull import attached, bundle, page


async def table(client: SyncClient, sql: str) -> list[tuple[Any, ...]]:
    async with client.runtime.engine.connect() as conn:
        return [tuple(r) for r in await conn.exec_driver_sql(sql)]


def post_row(key: str, title: str, author: str | None, version: int) -> dict[str, Any]:
    return {
        "schema": "business", "table": "posts", "key": {"id": key}, "row_version": version,
        "op": "INSERT", "payload": {"id": key, "title": title, "author_id": author},
    }


def test_multi_row_statements_repeat_the_row_shape() -> None:
    from oversync_sa.client.validation import ColumnInfo, KeyKind, TableInfo

    info = TableInfo("t", (ColumnInfo("id", "TEXT", 1), ColumnInfo("v", "INTEGER")), "id",
                     KeyKind.TEXT)
    assert upsert_sql(info, 3) == (
        'INSERT INTO "t" ("id", "v") VALUES (?, ?), (?, ?), (?, ?)'
        ' ON CONFLICT ("id") DO UPDATE SET "v" = excluded."v"'
    )
    assert upsert_sql(info) == upsert_sql(info, 1)
    assert delete_sql(info) == 'DELETE FROM "t" WHERE "id" = ?'
    assert delete_sql(info, 2) == 'DELETE FROM "t" WHERE "id" IN (?, ?)'


async def test_large_bundles_apply_every_row_in_order(
    client: SyncClient, server: FakeServer
) -> None:
    await attached(client, server)
    # 150 users: more than one multi-row statement, with a partial last one.
    first = [user_row(f"u{i:03d}", f"User {i}", 1, "INSERT") for i in range(150)]
    server.queue("GET /api/sync/pull", page(1, bundle(1, *first)))
    await client.pull_to_stable()
    assert len(await table(client, "SELECT id FROM users")) == 150

    # Bundle 2: updates, deletes, a key written twice (the last write wins) and a child row
    # whose parent arrives later in the same bundle (foreign keys are deferred).
    second = [
        user_row(f"u{i:03d}", f"Renamed {i}", 2, "UPDATE") for i in range(0, 150, 2)
    ] + [
        user_row(f"u{i:03d}", "", 2, "DELETE") | {"payload": None} for i in range(1, 150, 4)
    ] + [
        post_row("p1", "Hello", "new-user", 2),
        user_row("u000", "Twice", 2, "UPDATE"),
        user_row("new-user", "Late parent", 2, "INSERT"),
    ]
    server.queue("GET /api/sync/pull", page(2, bundle(2, *second)))
    await client.pull_to_stable()

    users = dict(await table(client, "SELECT id, name FROM users"))
    deleted = {f"u{i:03d}" for i in range(1, 150, 4)}
    expected = {
        f"u{i:03d}": ("Twice" if i == 0 else f"Renamed {i}" if i % 2 == 0 else f"User {i}")
        for i in range(150)
        if f"u{i:03d}" not in deleted
    } | {"new-user": "Late parent"}
    assert users == expected
    assert await table(client, "SELECT id, title, author_id FROM posts") == [
        ("p1", "Hello", "new-user")
    ]
    states = {
        str(k): (v, d)
        for k, v, d in await table(
            client, "SELECT key_json, row_version, deleted FROM _sync_row_state"
        )
    }
    assert len(states) == 152
    assert states['{"id":"u001"}'] == (2, 1)
    assert states['{"id":"u002"}'] == (2, 0)
    assert states['{"id":"u003"}'] == (1, 0)
    assert await table(client, "SELECT COUNT(*) FROM _sync_dirty_rows") == [(0,)]
    assert await client.last_bundle_seq_seen() == 2


async def test_sqlite_errors_surface_as_sqlalchemy_errors_and_roll_back(
    client: SyncClient, server: FakeServer
) -> None:
    await attached(client, server)
    server.default("GET /api/sync/capabilities", CAPS)
    bad = user_row("b", "Bob", 2, "INSERT") | {"payload": {"id": "b", "name": None}}
    server.queue(
        "GET /api/sync/pull",
        page(2, bundle(1, user_row("a", "Ann", 1, "INSERT")), bundle(2, bad)),
    )
    with pytest.raises(IntegrityError, match=r"NOT NULL constraint failed: users\.name"):
        await client.pull_to_stable()
    assert await table(client, "SELECT id FROM users") == [("a",)]
    assert await client.last_bundle_seq_seen() == 1
    assert await table(client, "SELECT apply_mode FROM _sync_apply_state") == [(0,)]
    assert await table(client, "SELECT COUNT(*) FROM _sync_row_state") == [(1,)]

    # The client is still usable: the failed bundle's connection went back to the pool clean.
    server.queue("GET /api/sync/pull", page(2, bundle(2, user_row("b", "Bob", 2, "INSERT"))))
    await client.pull_to_stable()
    assert await table(client, "SELECT id FROM users ORDER BY id") == [("a",), ("b",)]
