"""Dirty-capture behaviours pinned by go-oversync's ``push_test.go`` and
``typed_payload_parity_test.go`` that had no counterpart here (Go test named in each docstring)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client import SyncTable

from .conftest import SIMULATOR_DDL, execute_all, manage


async def dirty(conn: AsyncConnection) -> list[tuple[object, ...]]:
    result = await conn.exec_driver_sql(
        "SELECT table_name, key_json, op, payload FROM _sync_dirty_rows ORDER BY dirty_ordinal"
    )
    return [tuple(r) for r in result]


async def test_writes_made_by_application_triggers_are_captured(conn: AsyncConnection) -> None:
    """TestDirtyRowCapture_CapturesLocalTriggerGeneratedWrites."""
    await execute_all(conn, [SIMULATOR_DDL["users"], SIMULATOR_DDL["posts"]])
    await manage(conn, [SyncTable("users", "id"), SyncTable("posts", "id")])
    await execute_all(conn, [
        "CREATE TRIGGER welcome_post AFTER INSERT ON users BEGIN"
        " INSERT INTO posts (id, title, content, author_id, created_at, updated_at)"
        " VALUES ('welcome-' || NEW.id, 'Welcome', 'Hi', NEW.id, NEW.created_at,"
        " NEW.updated_at); END",
    ])

    await execute_all(conn, [
        "INSERT INTO users VALUES ('u1', 'Ann', 'a@x', '2026-01-01T00:00:00Z',"
        " '2026-01-01T00:00:00Z')",
    ])

    captured = {(table, key, op) for table, key, op, _payload in await dirty(conn)}
    assert captured == {
        ("users", '{"id":"u1"}', "INSERT"),
        ("posts", '{"id":"welcome-u1"}', "INSERT"),
    }


async def test_null_blob_and_timestamp_text_are_captured_as_is(conn: AsyncConnection) -> None:
    """TestDirtyRowCapture_TypedRows_NullBlobRemainsJsonNull and
    TestSerializeRowInTx_TypedRows_PreservesNullBlobAndTimestampText."""
    await execute_all(conn, [SIMULATOR_DDL["typed_rows"]])
    await manage(conn, [SyncTable("typed_rows", "id")])

    await execute_all(conn, [
        "INSERT INTO typed_rows (id, name, note, count_value, enabled_flag, rating, data,"
        " created_at) VALUES ('t1', 'n', NULL, NULL, 1, NULL, NULL, '2026-03-24 18:42:11')",
    ])

    ((table, key, op, payload),) = await dirty(conn)
    assert (table, key, op) == ("typed_rows", '{"id":"t1"}', "INSERT")
    assert '"data":null' in str(payload)
    assert '"note":null' in str(payload)
    # Timestamp text is not reinterpreted (Go's driver turned it into RFC 3339, §12.41).
    assert '"created_at":"2026-03-24 18:42:11"' in str(payload)
