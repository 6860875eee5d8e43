from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from oversync_sa.client import METADATA_TABLES, DatabaseInitializationError, initialize_database
from oversync_sa.client.local_schema import DIRTY_ORDINAL_INDEX, record_managed_table

from .conftest import rows

EXPECTED_COLUMNS = {
    "_sync_source_state": [
        "source_id",
        "next_source_bundle_id",
        "replaced_by_source_id",
        "created_at",
    ],
    "_sync_attachment_state": [
        "singleton_key",
        "current_source_id",
        "binding_state",
        "attached_user_id",
        "schema_name",
        "last_bundle_seq_seen",
        "rebuild_required",
        "pending_initialization_id",
    ],
    "_sync_operation_state": [
        "singleton_key",
        "kind",
        "target_user_id",
        "reason",
        "replacement_source_id",
        "staged_snapshot_id",
        "snapshot_bundle_seq",
        "snapshot_row_count",
    ],
    "_sync_apply_state": ["singleton_key", "apply_mode"],
    "_sync_row_state": [
        "schema_name",
        "table_name",
        "key_json",
        "row_version",
        "deleted",
        "updated_at",
    ],
    "_sync_dirty_rows": [
        "schema_name",
        "table_name",
        "key_json",
        "op",
        "base_row_version",
        "payload",
        "dirty_ordinal",
        "updated_at",
    ],
    "_sync_snapshot_stage": [
        "snapshot_id",
        "row_ordinal",
        "schema_name",
        "table_name",
        "key_json",
        "row_version",
        "payload",
    ],
    "_sync_outbox_bundle": [
        "singleton_key",
        "state",
        "source_id",
        "source_bundle_id",
        "canonical_request_hash",
        "row_count",
        "initialization_id",
        "remote_bundle_hash",
        "remote_bundle_seq",
    ],
    "_sync_outbox_rows": [
        "source_bundle_id",
        "row_ordinal",
        "schema_name",
        "table_name",
        "key_json",
        "wire_key_json",
        "op",
        "base_row_version",
        "local_payload",
        "wire_payload",
    ],
    "_sync_push_stage": [
        "bundle_seq",
        "row_ordinal",
        "schema_name",
        "table_name",
        "key_json",
        "op",
        "row_version",
        "payload",
    ],
    "_sync_managed_tables": ["schema_name", "table_name"],
}

EXPECTED_PKS = {
    "_sync_source_state": ["source_id"],
    "_sync_attachment_state": ["singleton_key"],
    "_sync_operation_state": ["singleton_key"],
    "_sync_apply_state": ["singleton_key"],
    "_sync_row_state": ["schema_name", "table_name", "key_json"],
    "_sync_dirty_rows": ["schema_name", "table_name", "key_json"],
    "_sync_snapshot_stage": ["snapshot_id", "row_ordinal"],
    "_sync_outbox_bundle": ["singleton_key"],
    "_sync_outbox_rows": ["source_bundle_id", "row_ordinal"],
    "_sync_push_stage": ["bundle_seq", "row_ordinal"],
    "_sync_managed_tables": ["schema_name", "table_name"],
}


async def test_creates_exactly_the_metadata_tables(conn: AsyncConnection) -> None:
    assert set(METADATA_TABLES) == set(EXPECTED_COLUMNS)
    tables = await rows(conn, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    assert sorted(t[0] for t in tables) == sorted(EXPECTED_COLUMNS)
    for table, columns in EXPECTED_COLUMNS.items():
        info = await rows(conn, "SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", (table,))
        assert [c[0] for c in info] == columns, table
        pk = [name for name, position in sorted(info, key=lambda c: int(str(c[1]))) if position]
        assert pk == EXPECTED_PKS[table], table


async def test_seeds_singletons_with_defaults_and_sets_pragmas(conn: AsyncConnection) -> None:
    assert await rows(conn, "SELECT * FROM _sync_attachment_state") == [
        (1, "", "anonymous", "", "", 0, 0, "")
    ]
    assert await rows(conn, "SELECT * FROM _sync_operation_state") == [
        (1, "none", "", "", "", "", 0, 0)
    ]
    assert await rows(conn, "SELECT * FROM _sync_apply_state") == [(1, 0)]
    assert await rows(conn, "SELECT * FROM _sync_outbox_bundle") == [
        (1, "none", "", 0, "", 0, "", "", 0)
    ]
    assert await rows(conn, "PRAGMA journal_mode") == [("wal",)]
    assert await rows(conn, "PRAGMA foreign_keys") == [(1,)]
    await conn.rollback()


async def test_check_constraints_are_enforced(conn: AsyncConnection) -> None:
    with pytest.raises(Exception, match="CHECK constraint failed"):
        await conn.exec_driver_sql("UPDATE _sync_operation_state SET kind = 'bogus'")
    await conn.rollback()
    with pytest.raises(Exception, match="CHECK constraint failed"):
        await conn.exec_driver_sql("INSERT INTO _sync_apply_state VALUES (2, 0)")
    await conn.rollback()


async def test_initialize_is_idempotent_keeps_state_and_resets_apply_mode(
    conn: AsyncConnection,
) -> None:
    await conn.exec_driver_sql(
        "UPDATE _sync_attachment_state SET binding_state = 'attached', attached_user_id = 'u1'"
    )
    await conn.exec_driver_sql("UPDATE _sync_apply_state SET apply_mode = 1")
    await conn.commit()

    await initialize_database(conn)
    await initialize_database(conn)

    assert await rows(
        conn, "SELECT binding_state, attached_user_id FROM _sync_attachment_state"
    ) == [("attached", "u1")]
    assert await rows(conn, "SELECT apply_mode FROM _sync_apply_state") == [(0,)]
    assert await rows(conn, "SELECT count(*) FROM _sync_outbox_bundle") == [(1,)]
    await conn.rollback()


async def test_next_ordinal_lookup_uses_the_index(conn: AsyncConnection) -> None:
    plan = await rows(
        conn, "EXPLAIN QUERY PLAN SELECT COALESCE(MAX(dirty_ordinal), 0) + 1 FROM _sync_dirty_rows"
    )
    details = " ".join(str(step[-1]) for step in plan)
    assert f"COVERING INDEX {DIRTY_ORDINAL_INDEX}" in details
    await conn.rollback()


async def test_refuses_a_connection_inside_a_transaction(conn: AsyncConnection) -> None:
    await conn.exec_driver_sql("SELECT 1")
    assert conn.in_transaction()
    with pytest.raises(DatabaseInitializationError, match="outside any transaction"):
        await initialize_database(conn)
    await conn.rollback()


async def test_refuses_a_non_sqlite_dialect(
    conn: AsyncConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conn.dialect, "name", "postgresql")
    with pytest.raises(DatabaseInitializationError, match="needs a SQLite connection"):
        await initialize_database(conn)


async def test_ddl_failure_is_wrapped_and_rolled_back(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        # A user object squatting on a metadata name makes CREATE INDEX fail.
        await connection.exec_driver_sql("CREATE VIEW _sync_dirty_rows AS SELECT 1 AS x")
        await connection.commit()
        with pytest.raises(DatabaseInitializationError, match="failed to create"):
            await initialize_database(connection)
        assert not connection.in_transaction()


async def test_in_memory_database_still_initialises(caplog: pytest.LogCaptureFixture) -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        async with engine.connect() as connection:
            with caplog.at_level("INFO", logger="oversync_sa.client.local_schema"):
                await initialize_database(connection)
            assert "not WAL" in caplog.text
            assert await rows(connection, "SELECT apply_mode FROM _sync_apply_state") == [(0,)]
            await connection.rollback()
    finally:
        await engine.dispose()


async def test_record_managed_table_is_idempotent(conn: AsyncConnection) -> None:
    await record_managed_table(conn, "business", " Users ")
    await record_managed_table(conn, "business", "users")
    assert await rows(conn, "SELECT * FROM _sync_managed_tables") == [("business", "users")]
    await conn.rollback()


async def test_failed_apply_mode_reset_is_only_logged(
    conn: AsyncConnection, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(
        "oversync_sa.client.local_schema._RESET_APPLY_MODE", "UPDATE no_such_table SET x = 0"
    )
    with caplog.at_level("WARNING", logger="oversync_sa.client.local_schema"):
        await initialize_database(conn)
    assert "could not reset _sync_apply_state.apply_mode" in caplog.text
    assert not conn.in_transaction()
