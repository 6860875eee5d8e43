from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client import (
    SyncTable,
    drop_triggers,
    install_triggers,
    is_transition_pending_error,
    set_apply_mode,
    trigger_names,
)
from oversync_sa.client.local_schema import DIRTY_ORDINAL_INDEX, NEXT_DIRTY_ORDINAL_SQL
from oversync_sa.client.triggers import build_triggers, download_only_message

from .conftest import SCHEMA, execute_all, manage, rows

DOCS = "CREATE TABLE docs (id TEXT PRIMARY KEY NOT NULL, body TEXT)"


async def dirty(conn: AsyncConnection) -> list[tuple[object, ...]]:
    return await rows(
        conn,
        "SELECT key_json, op, base_row_version, payload, dirty_ordinal FROM _sync_dirty_rows"
        " ORDER BY dirty_ordinal",
    )


async def installed(conn: AsyncConnection, table: str) -> list[str]:
    found = await rows(
        conn, "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,)
    )
    return sorted(str(r[0]) for r in found)


async def set_row_state(conn: AsyncConnection, key: str, version: int, deleted: int) -> None:
    await conn.exec_driver_sql(
        "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version, deleted)"
        " VALUES (?, 'docs', ?, ?, ?)",
        (SCHEMA, f'{{"id":"{key}"}}', version, deleted),
    )


async def seed_live(conn: AsyncConnection, key: str, version: int) -> None:
    """A synced row: present in the table and live in row_state, written in apply mode."""
    await set_apply_mode(conn, True)
    await conn.exec_driver_sql("INSERT INTO docs VALUES (?, 'old')", (key,))
    await set_row_state(conn, key, version, 0)
    await set_apply_mode(conn, False)
    await conn.commit()


@pytest.fixture
async def docs(conn: AsyncConnection) -> AsyncConnection:
    await execute_all(conn, [DOCS])
    await manage(conn, [SyncTable("docs", "id")])
    return conn


K = '{"id":"k"}'


@pytest.mark.parametrize(
    ("state", "writes", "expected"),
    [
        (None, ["INSERT INTO docs VALUES ('k', 'v1')"], ("INSERT", 0, "v1")),
        ("tombstone", ["INSERT INTO docs VALUES ('k', 'v1')"], ("INSERT", 7, "v1")),
        ("live", ["UPDATE docs SET body = 'v1' WHERE id = 'k'"], ("UPDATE", 7, "v1")),
        (
            None,
            ["INSERT INTO docs VALUES ('k', 'v1')", "UPDATE docs SET body = 'v2' WHERE id = 'k'"],
            ("INSERT", 0, "v2"),
        ),
        (
            "live",
            [
                "UPDATE docs SET body = 'v1' WHERE id = 'k'",
                "UPDATE docs SET body = 'v2' WHERE id = 'k'",
            ],
            ("UPDATE", 7, "v2"),
        ),
        (
            None,
            ["INSERT INTO docs VALUES ('k', 'v1')", "DELETE FROM docs WHERE id = 'k'"],
            ("DELETE", 0, None),
        ),
        (
            "live",
            ["UPDATE docs SET body = 'v1' WHERE id = 'k'", "DELETE FROM docs WHERE id = 'k'"],
            ("DELETE", 7, None),
        ),
        (
            "live",
            ["DELETE FROM docs WHERE id = 'k'", "INSERT INTO docs VALUES ('k', 'v1')"],
            ("UPDATE", 7, "v1"),
        ),
        ("live", ["DELETE FROM docs WHERE id = 'k'"], ("DELETE", 7, None)),
        ("live", ["UPDATE docs SET body = 'old' WHERE id = 'k'"], ("UPDATE", 7, "old")),
    ],
    ids=[
        "insert",
        "insert-over-tombstone",
        "update",
        "insert-update",
        "update-update",
        "insert-delete",
        "update-delete",
        "delete-insert",
        "delete",
        "no-op-update",
    ],
)
async def test_coalescing(
    docs: AsyncConnection,
    state: str | None,
    writes: list[str],
    expected: tuple[str, int, str | None],
) -> None:
    if state == "live":
        await seed_live(docs, "k", 7)
    elif state == "tombstone":
        await set_row_state(docs, "k", 7, 1)
        await docs.commit()
    for statement in writes:
        await docs.exec_driver_sql(statement)
    await docs.commit()
    op, base, body = expected
    payload = None if body is None else f'{{"id":"k","body":"{body}"}}'
    assert await dirty(docs) == [(K, op, base, payload, 1)]


async def test_key_change_deletes_old_and_upserts_new(docs: AsyncConnection) -> None:
    await seed_live(docs, "old", 3)
    await docs.exec_driver_sql("UPDATE docs SET id = 'new', body = 'b' WHERE id = 'old'")
    await docs.commit()
    assert await dirty(docs) == [
        ('{"id":"old"}', "DELETE", 3, None, 1),
        ('{"id":"new"}', "INSERT", 0, '{"id":"new","body":"b"}', 2),
    ]


async def test_first_capture_pins_base_version_and_ordinal(docs: AsyncConnection) -> None:
    await docs.exec_driver_sql("INSERT INTO docs VALUES ('a', '1')")
    await docs.exec_driver_sql("INSERT INTO docs VALUES ('b', '1')")
    # A later row_state change must not move the pinned base of the existing dirty row.
    await set_row_state(docs, "a", 9, 0)
    await docs.exec_driver_sql("UPDATE docs SET body = '2' WHERE id = 'a'")
    await docs.commit()
    assert await dirty(docs) == [
        ('{"id":"a"}', "UPDATE", 0, '{"id":"a","body":"2"}', 1),
        ('{"id":"b"}', "INSERT", 0, '{"id":"b","body":"1"}', 2),
    ]


async def test_fk_cascade_deletes_are_captured(conn: AsyncConnection) -> None:
    await execute_all(
        conn,
        [
            "CREATE TABLE parent (id TEXT PRIMARY KEY)",
            "CREATE TABLE child (id TEXT PRIMARY KEY,"
            " parent_id TEXT REFERENCES parent(id) ON DELETE CASCADE)",
            "INSERT INTO parent VALUES ('p')",
            "INSERT INTO child VALUES ('c', 'p')",
        ],
    )
    await manage(conn, [SyncTable("parent", "id"), SyncTable("child", "id")])
    await conn.exec_driver_sql("DELETE FROM parent WHERE id = 'p'")
    await conn.commit()
    assert sorted((r[0], r[1]) for r in await dirty(conn)) == [
        ('{"id":"c"}', "DELETE"),
        ('{"id":"p"}', "DELETE"),
    ]


async def test_apply_mode_suppresses_capture_and_is_rolled_back(docs: AsyncConnection) -> None:
    await set_apply_mode(docs, True)
    await docs.exec_driver_sql("INSERT INTO docs VALUES ('server', 'x')")
    await set_apply_mode(docs, False)
    await docs.commit()
    assert await dirty(docs) == []

    await set_apply_mode(docs, True)
    await docs.rollback()
    assert await rows(docs, "SELECT apply_mode FROM _sync_apply_state") == [(0,)]
    await docs.exec_driver_sql("UPDATE docs SET body = 'local' WHERE id = 'server'")
    await docs.commit()
    assert [r[1] for r in await dirty(docs)] == ["INSERT"]


@pytest.mark.parametrize("kind", ["remote_replace", "source_recovery"])
@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO docs VALUES ('n', 'x')",
        "UPDATE docs SET body = 'y' WHERE id = 'k'",
        "DELETE FROM docs WHERE id = 'k'",
    ],
)
async def test_guards_reject_app_writes_during_transitions(
    docs: AsyncConnection, kind: str, statement: str
) -> None:
    await seed_live(docs, "k", 1)
    await docs.exec_driver_sql("UPDATE _sync_operation_state SET kind = ?", (kind,))
    await docs.commit()
    with pytest.raises(DBAPIError, match="SYNC_TRANSITION_PENDING") as info:
        await docs.exec_driver_sql(statement)
    assert is_transition_pending_error(info.value)
    await docs.rollback()

    # The client's own writes pass (and are not captured).
    await set_apply_mode(docs, True)
    await docs.exec_driver_sql(statement)
    await set_apply_mode(docs, False)
    await docs.commit()
    assert await dirty(docs) == []


async def test_is_transition_pending_error_follows_causes() -> None:
    outer = RuntimeError("wrapped")
    outer.__cause__ = ValueError("SYNC_TRANSITION_PENDING")
    assert is_transition_pending_error(outer)
    assert not is_transition_pending_error(RuntimeError("constraint failed"))


async def test_download_only_rejects_local_writes_but_not_apply(conn: AsyncConnection) -> None:
    await execute_all(conn, [DOCS])
    await manage(conn, [SyncTable("docs", "id", download_only=True)])
    assert await installed(conn, "docs") == sorted(trigger_names("docs")[:3])
    message = download_only_message("docs")
    assert message.startswith("oversync: table docs is download-only")
    await set_apply_mode(conn, True)
    await conn.exec_driver_sql("INSERT INTO docs VALUES ('old', 'x')")
    await set_apply_mode(conn, False)
    await conn.commit()

    for statement in (
        "INSERT INTO docs VALUES ('k', 'x')",
        "UPDATE docs SET body = 'y'",
        "DELETE FROM docs",
    ):
        with pytest.raises(DBAPIError, match="oversync: table docs is download-only"):
            await conn.exec_driver_sql(statement)
        await conn.rollback()

    await set_apply_mode(conn, True)
    await conn.exec_driver_sql("INSERT INTO docs VALUES ('k', 'x')")
    await conn.exec_driver_sql("UPDATE docs SET body = 'y'")
    await conn.exec_driver_sql("DELETE FROM docs WHERE id = 'old'")
    await set_apply_mode(conn, False)
    await conn.commit()
    assert await rows(conn, "SELECT * FROM docs") == [("k", "y")]
    assert await dirty(conn) == []


async def test_install_is_idempotent_and_refreshes(conn: AsyncConnection) -> None:
    await execute_all(conn, [DOCS])
    managed = await manage(conn, [SyncTable("docs", "id")])
    info = managed.table("docs")
    assert await installed(conn, "docs") == sorted(trigger_names("docs"))
    assert await install_triggers(conn, SCHEMA, info) == []
    assert await rows(conn, "SELECT * FROM _sync_managed_tables") == [(SCHEMA, "docs")]

    # A different schema literal changes the capture triggers only.
    assert await install_triggers(conn, "other", info) == list(trigger_names("docs")[3:])

    # Becoming download-only replaces the guards and drops the capture triggers.
    only = await manage(conn, [SyncTable("docs", "id", download_only=True)])
    assert await installed(conn, "docs") == sorted(trigger_names("docs")[:3])
    assert await install_triggers(conn, SCHEMA, only.table("docs")) == []

    await drop_triggers(conn, "DOCS")
    await conn.commit()
    assert await installed(conn, "docs") == []


async def test_stale_trigger_sql_is_replaced(docs: AsyncConnection) -> None:
    name = trigger_names("docs")[3]
    await docs.exec_driver_sql(f'DROP TRIGGER "{name}"')
    await docs.exec_driver_sql(f'CREATE TRIGGER "{name}" AFTER INSERT ON docs BEGIN SELECT 1; END')
    await docs.commit()
    managed = await manage(docs, [SyncTable("docs", "id")])
    assert await install_triggers(docs, SCHEMA, managed.table("docs")) == []
    await docs.exec_driver_sql("INSERT INTO docs VALUES ('k', 'v')")
    await docs.commit()
    assert [r[1] for r in await dirty(docs)] == ["INSERT"]


async def test_awkward_identifiers_are_quoted(conn: AsyncConnection) -> None:
    await execute_all(
        conn, ['CREATE TABLE "we\'ird:tab" ("My Key" TEXT PRIMARY KEY, "va""l" TEXT)']
    )
    await manage(conn, [SyncTable("we'ird:tab", "my key")], schema="sch'ema")
    await conn.exec_driver_sql("INSERT INTO \"we'ird:tab\" VALUES ('k', 'v')")
    await conn.commit()
    assert await rows(
        conn, "SELECT schema_name, table_name, key_json, payload FROM _sync_dirty_rows"
    ) == [("sch'ema", "we'ird:tab", '{"my key":"k"}', '{"my key":"k","va\\"l":"v"}')]


async def test_blob_in_non_blob_column_fails_the_write(docs: AsyncConnection) -> None:
    with pytest.raises(DBAPIError, match="JSON cannot hold BLOB values"):
        await docs.exec_driver_sql("INSERT INTO docs VALUES ('k', x'00')")
    await docs.rollback()


async def test_capture_next_ordinal_does_not_scan(docs: AsyncConnection) -> None:
    await docs.exec_driver_sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)"
        " INSERT INTO docs SELECT 'k' || i, 'v' FROM n"
    )
    await docs.commit()
    assert await rows(
        docs, "SELECT count(*), min(dirty_ordinal), max(dirty_ordinal) FROM _sync_dirty_rows"
    ) == [(20000, 1, 20000)]

    triggers = build_triggers(SCHEMA, (await manage(docs, [SyncTable("docs", "id")])).table("docs"))
    assert all(NEXT_DIRTY_ORDINAL_SQL in triggers[name] for name in trigger_names("docs")[3:])
    plan = await rows(docs, f"EXPLAIN QUERY PLAN {NEXT_DIRTY_ORDINAL_SQL}")
    details = [str(step[-1]) for step in plan]
    assert details == [f"SEARCH _sync_dirty_rows USING COVERING INDEX {DIRTY_ORDINAL_INDEX}"]
    await docs.rollback()
