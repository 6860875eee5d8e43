"""Bulk pull apply: multi-row statements, one driver hop per bundle, errors as SQLAlchemy's."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from oversync_sa.client import bulk_apply
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


async def row_states(client: SyncClient) -> dict[str, tuple[int, int, str]]:
    return {
        str(k): (v, d, u)
        for k, v, d, u in await table(
            client, "SELECT key_json, row_version, deleted, updated_at FROM _sync_row_state"
        )
    }


async def test_already_applied_rows_inside_a_row_state_group_are_skipped(
    client: SyncClient, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim refused in the middle of a group: only that statement's fresh rows are written.

    Row states are claimed a statement of ``_ROW_STATES_PER_STATEMENT`` keys at a time; one
    already-applied key makes SQLite undo the whole statement, whose keys then go through the
    version lookup. Rows of the other statements keep the fast path.
    """
    monkeypatch.setattr(bulk_apply, "_ROW_STATES_PER_STATEMENT", 8)
    await attached(client, server)
    # Bundle 1: k05-k09 at version 3 (equal to bundle 2's: already applied) and k12 at
    # version 9 (newer than bundle 2's), both in the middle of bundle 2's statements.
    server.queue(
        "GET /api/sync/pull",
        page(
            1,
            bundle(
                1,
                *[user_row(f"k{i:02d}", "Old", 3, "INSERT") for i in range(5, 10)],
                user_row("k12", "Newer", 9, "INSERT"),
            ),
        ),
    )
    await client.pull_to_stable()
    before = await row_states(client)
    claims: list[int] = []
    original = bulk_apply._known_versions

    def known_versions(*args: Any) -> dict[str, int]:
        claims.append(len(args[3]))
        return original(*args)

    monkeypatch.setattr(bulk_apply, "_known_versions", known_versions)
    server.queue(
        "GET /api/sync/pull",
        page(2, bundle(2, *[user_row(f"k{i:02d}", "New", 3, "UPDATE") for i in range(20)])),
    )
    await client.pull_to_stable()

    stale = {f"k{i:02d}" for i in (5, 6, 7, 8, 9, 12)}
    users = dict(await table(client, "SELECT id, name FROM users"))
    assert users == {
        f"k{i:02d}": ("New" if f"k{i:02d}" not in stale else "Newer" if i == 12 else "Old")
        for i in range(20)
    }
    states = await row_states(client)
    assert len(states) == 20
    for key in stale:  # untouched: neither version nor timestamp moved
        assert states[f'{{"id":"{key}"}}'] == before[f'{{"id":"{key}"}}']
    assert {k: v[:2] for k, v in states.items() if k[7:10] not in stale} == {
        f'{{"id":"k{i:02d}"}}': (3, 0) for i in range(20) if f"k{i:02d}" not in stale
    }
    # Statements k00-k07 and k08-k15 were refused and looked up; k16-k19 was not.
    assert claims == [8, 8]
    assert await client.last_bundle_seq_seen() == 2


async def test_row_states_of_mixed_versions_and_deletes(
    client: SyncClient, server: FakeServer
) -> None:
    """Rows of one bundle with different versions and ops: one row-state group each."""
    await attached(client, server)
    rows = [user_row(f"a{i}", "A", 4 + i % 3, "INSERT") for i in range(9)] + [
        user_row("a1", "", 7, "DELETE") | {"payload": None},
        user_row("gone", "", 6, "DELETE") | {"payload": None},
    ]
    server.queue("GET /api/sync/pull", page(1, bundle(1, *rows)))
    await client.pull_to_stable()
    states = {k: v[:2] for k, v in (await row_states(client)).items()}
    expected = {f'{{"id":"a{i}"}}': (4 + i % 3, 0) for i in range(9)}
    expected['{"id":"a1"}'] = (7, 1)
    expected['{"id":"gone"}'] = (6, 1)
    assert states == expected
    assert sorted(dict(await table(client, "SELECT id, name FROM users"))) == [
        f"a{i}" for i in range(9) if i != 1
    ]


def test_only_the_stale_claim_error_is_taken_for_one() -> None:
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE _sync_row_state (schema_name TEXT NOT NULL, table_name TEXT NOT NULL,"
        " key_json TEXT NOT NULL, row_version INTEGER NOT NULL DEFAULT 0,"
        " deleted INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL,"
        " PRIMARY KEY (schema_name, table_name, key_json))"
    )
    sql = bulk_apply._row_state_sql(2, True)
    conn.execute(sql, ("s", "t", "now", 5, 0, "a", "b"))
    # Same version again: refused, and the statement's other (new) key is undone with it.
    with pytest.raises(sqlite3.IntegrityError) as refused:
        conn.execute(sql, ("s", "t", "later", 5, 0, "c", "a"))
    assert bulk_apply._is_stale_claim(refused.value)
    assert conn.execute("SELECT key_json FROM _sync_row_state ORDER BY 1").fetchall() == [
        ("a",),
        ("b",),
    ]
    # Any other failure of the statement is not a refused claim.
    with pytest.raises(sqlite3.IntegrityError) as other:
        conn.execute(sql, ("s", None, "now", 6, 0, "d", "e"))
    assert not bulk_apply._is_stale_claim(other.value)


def _row_state_table(*, not_null: bool) -> Any:
    import sqlite3

    conn = sqlite3.connect(":memory:")
    version = "row_version INTEGER NOT NULL DEFAULT 0" if not_null else "row_version INTEGER"
    conn.execute(
        "CREATE TABLE _sync_row_state (schema_name TEXT NOT NULL, table_name TEXT NOT NULL,"
        f" key_json TEXT NOT NULL, {version}, deleted INTEGER NOT NULL DEFAULT 0,"
        " updated_at TEXT NOT NULL, PRIMARY KEY (schema_name, table_name, key_json))"
    )
    return conn


@pytest.mark.parametrize("not_null", [True, False])
def test_claims_only_where_the_row_version_is_not_null(not_null: bool) -> None:
    """Without §2's NOT NULL a refused claim would store NULL: such a file is looked up first."""
    conn = _row_state_table(not_null=not_null)
    cursor = conn.cursor()
    cache: dict[str, Any] = {}
    assert bulk_apply._claims_possible(cursor, 1, cache) is not_null
    claim = bulk_apply._claims_possible(cursor, 1, cache)
    first = {f'{{"id":"k{i}"}}': (f"k{i}", 4, ("v",)) for i in range(4)}
    fresh = bulk_apply._claim_fresh(cursor, "s", "t", "t1", first, False, claim)
    assert list(fresh) == list(first)
    # k0 is newer, k1 equal, k2 older than the second write; k5 is new.
    conn.execute("UPDATE _sync_row_state SET row_version = 9 WHERE key_json LIKE '%k0%'")
    second = {
        f'{{"id":"k{i}"}}': (f"k{i}", 4 if i == 1 else 6, ("v",) if i != 5 else None)
        for i in (0, 1, 2, 5)
    }
    fresh = bulk_apply._claim_fresh(cursor, "s", "t", "t2", second, True, claim)
    assert list(fresh) == ['{"id":"k2"}', '{"id":"k5"}']
    assert conn.execute(
        "SELECT key_json, row_version, deleted, updated_at FROM _sync_row_state ORDER BY 1"
    ).fetchall() == [
        ('{"id":"k0"}', 9, 0, "t1"),
        ('{"id":"k1"}', 4, 0, "t1"),
        ('{"id":"k2"}', 6, 0, "t2"),
        ('{"id":"k3"}', 4, 0, "t1"),
        ('{"id":"k5"}', 6, 1, "t2"),
    ]
