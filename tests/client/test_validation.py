from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client import (
    ClientConfig,
    KeyKind,
    SyncTable,
    validate_managed_tables,
)
from oversync_sa.client.validation import (
    RULE_FK_COMPOSITE,
    RULE_FK_NOT_CLOSED,
    RULE_KEY_COLUMN_MISSING,
    RULE_KEY_COMPOSITE,
    RULE_KEY_MISSING,
    RULE_KEY_NOT_PRIMARY_KEY,
    RULE_KEY_NOT_SOLE_PRIMARY_KEY,
    RULE_KEY_TYPE,
    RULE_SCHEMA_SCOPE,
    RULE_TABLE_DUPLICATE,
    RULE_TABLE_MISSING,
    RULE_TABLE_NAME_EMPTY,
    RULE_TABLE_NAME_QUALIFIED,
    RULE_TABLE_NAME_RESERVED,
)
from oversync_sa.errors import UnsupportedSchemaError

from .conftest import SCHEMA, SIMULATOR_DDL, execute_all

SIMULATOR_ORDER = list(SIMULATOR_DDL)


async def validate(conn: AsyncConnection, *tables: SyncTable, schema: str = SCHEMA):  # type: ignore[no-untyped-def]
    return await validate_managed_tables(conn, ClientConfig(schema, tables))


async def violations(conn: AsyncConnection, *tables: SyncTable) -> list[tuple[str, str]]:
    with pytest.raises(UnsupportedSchemaError) as info:
        await validate(conn, *tables)
    await conn.rollback()
    return [(v.table, v.rule) for v in info.value.violations]


async def test_simulator_tables_validate_in_dependency_order(conn: AsyncConnection) -> None:
    await execute_all(conn, SIMULATOR_DDL.values())
    managed = await validate(conn, *(SyncTable(name, "id") for name in SIMULATOR_ORDER))
    assert dict(managed.order) == {
        "users": 0,
        "posts": 1,
        "categories": 2,
        "files": 3,
        "file_reviews": 4,
        "typed_rows": 5,
        "teams": 6,
        "team_members": 7,
    }
    assert [t.name for t in managed.tables] == SIMULATOR_ORDER

    files = managed.table("FILES")
    assert files.key_kind is KeyKind.UUID_BLOB
    assert files.blob_columns == {"id", "data"}
    assert files.uuid_columns == {"id"}

    reviews = managed.table("file_reviews")
    assert reviews.fk_columns == {"file_id"}
    assert reviews.uuid_columns == {"id", "file_id"}
    assert reviews.is_uuid_reference("FILE_ID")
    assert not reviews.is_uuid_reference("review")

    typed = managed.table("typed_rows")
    assert typed.key_kind is KeyKind.TEXT
    assert typed.column_names == (
        "id",
        "name",
        "note",
        "count_value",
        "enabled_flag",
        "rating",
        "data",
        "created_at",
    )
    assert [c.declared_type for c in typed.columns][3:6] == ["INTEGER", "INTEGER", "REAL"]
    assert typed.blob_columns == {"data"}
    assert typed.uuid_columns == frozenset()
    with pytest.raises(KeyError):
        managed.table("nope")
    await conn.rollback()


async def test_key_keeps_declared_spelling(conn: AsyncConnection) -> None:
    await execute_all(conn, ["CREATE TABLE Docs (DocID text PRIMARY KEY, body TEXT)"])
    managed = await validate(conn, SyncTable(" DOCS ", "docid"))
    info = managed.table("docs")
    assert info.name == "docs"
    assert info.key_column == "DocID"
    assert info.key_json_name == "docid"
    await conn.rollback()


async def test_name_rules_are_all_reported(conn: AsyncConnection) -> None:
    await execute_all(conn, ["CREATE TABLE a (id TEXT PRIMARY KEY)"])
    found = await violations(
        conn,
        SyncTable("  ", "id"),
        SyncTable("main.a", "id"),
        SyncTable("_sync_dirty_rows", "id"),
        SyncTable("a", "id"),
        SyncTable("A", "id"),
        SyncTable("b"),
        SyncTable("c", sync_key_columns=("id", "other")),
    )
    assert found == [
        ("tables[0]", RULE_TABLE_NAME_EMPTY),
        ("main.a", RULE_TABLE_NAME_QUALIFIED),
        ("_sync_dirty_rows", RULE_TABLE_NAME_RESERVED),
        ("a", RULE_TABLE_DUPLICATE),
        ("b", RULE_KEY_MISSING),
        ("c", RULE_KEY_COMPOSITE),
    ]


async def test_key_rules_are_all_reported(conn: AsyncConnection) -> None:
    await execute_all(
        conn,
        [
            "CREATE TABLE no_key_col (id TEXT PRIMARY KEY)",
            "CREATE TABLE not_pk (id TEXT, other TEXT PRIMARY KEY)",
            "CREATE TABLE composite_pk (id TEXT, other TEXT, PRIMARY KEY (id, other))",
            "CREATE TABLE int_key (id INTEGER PRIMARY KEY)",
            "CREATE TABLE varchar_key (id VARCHAR(36) PRIMARY KEY)",
            "CREATE TABLE uuid_key (id UUID PRIMARY KEY)",
            "CREATE TABLE untyped_key (id PRIMARY KEY)",
        ],
    )
    with pytest.raises(UnsupportedSchemaError) as info:
        await validate(
            conn,
            SyncTable("missing", "id"),
            SyncTable("no_key_col", "uuid"),
            SyncTable("not_pk", "id"),
            SyncTable("composite_pk", "id"),
            SyncTable("int_key", "id"),
            SyncTable("varchar_key", "id"),
            SyncTable("uuid_key", "id"),
            SyncTable("untyped_key", "id"),
        )
    await conn.rollback()
    found = [(v.table, v.rule) for v in info.value.violations]
    assert found == [
        ("missing", RULE_TABLE_MISSING),
        ("no_key_col", RULE_KEY_COLUMN_MISSING),
        ("not_pk", RULE_KEY_NOT_PRIMARY_KEY),
        ("not_pk", RULE_KEY_NOT_SOLE_PRIMARY_KEY),
        ("composite_pk", RULE_KEY_NOT_SOLE_PRIMARY_KEY),
        ("int_key", RULE_KEY_TYPE),
        ("varchar_key", RULE_KEY_TYPE),
        ("uuid_key", RULE_KEY_TYPE),
        ("untyped_key", RULE_KEY_TYPE),
    ]
    messages = "\n".join(v.message for v in info.value.violations)
    assert "does not contain configured primary key column 'uuid'" in messages
    assert "is not declared as PRIMARY KEY" in messages
    assert "supports only TEXT keys and UUID-backed BLOB keys" in messages
    assert "has type '(none)'" in messages


async def test_fk_closure_and_composite_fks_sorted(conn: AsyncConnection) -> None:
    await execute_all(
        conn,
        [
            "CREATE TABLE outside (id TEXT PRIMARY KEY, k2 TEXT, UNIQUE (id, k2))",
            "CREATE TABLE parent (id TEXT PRIMARY KEY, k2 TEXT, UNIQUE (id, k2))",
            "CREATE TABLE zeta (id TEXT PRIMARY KEY, o TEXT REFERENCES outside(id),"
            " p TEXT REFERENCES outside)",
            "CREATE TABLE alpha (id TEXT PRIMARY KEY, a TEXT, b TEXT,"
            " o TEXT REFERENCES outside(id), FOREIGN KEY (a, b) REFERENCES parent(id, k2))",
            "CREATE TABLE self_ref (id TEXT PRIMARY KEY, parent_id TEXT REFERENCES self_ref(id),"
            " up TEXT REFERENCES parent)",
        ],
    )
    with pytest.raises(UnsupportedSchemaError) as info:
        await validate(
            conn,
            SyncTable("parent", "id"),
            SyncTable("zeta", "id"),
            SyncTable("alpha", "id"),
            SyncTable("self_ref", "id"),
        )
    await conn.rollback()
    assert [(v.rule, v.message) for v in info.value.violations] == [
        (
            RULE_FK_COMPOSITE,
            "managed tables contain unsupported composite foreign keys: alpha -> parent",
        ),
        (RULE_FK_NOT_CLOSED, "managed tables are not FK-closed: alpha.o -> outside.id"),
        (RULE_FK_NOT_CLOSED, "managed tables are not FK-closed: zeta.o -> outside.id"),
        (
            RULE_FK_NOT_CLOSED,
            "managed tables are not FK-closed: zeta.p -> outside.(primary key)",
        ),
    ]


async def test_fk_to_table_with_invalid_key_is_not_reported_as_unclosed(
    conn: AsyncConnection,
) -> None:
    await execute_all(
        conn,
        [
            "CREATE TABLE p (id INTEGER PRIMARY KEY)",
            "CREATE TABLE c (id TEXT PRIMARY KEY, p_id INTEGER REFERENCES p(id),"
            " x TEXT REFERENCES elsewhere(id))",
        ],
    )
    found = await violations(conn, SyncTable("p", "id"), SyncTable("c", "id"))
    assert found == [("p", RULE_KEY_TYPE), ("c", RULE_FK_NOT_CLOSED)]


async def test_fk_without_target_column_and_blob_reference(conn: AsyncConnection) -> None:
    await execute_all(
        conn,
        [
            "CREATE TABLE p (id BLOB PRIMARY KEY)",
            "CREATE TABLE c (id TEXT PRIMARY KEY, p_id BLOB REFERENCES p, t_id TEXT REFERENCES c)",
        ],
    )
    managed = await validate(conn, SyncTable("c", "id"), SyncTable("p", "id"))
    child = managed.table("c")
    assert child.fk_columns == {"p_id", "t_id"}
    assert child.uuid_columns == {"p_id"}
    assert child.foreign_keys[0].to_column is None or child.foreign_keys[1].to_column is None
    assert dict(managed.order) == {"p": 0, "c": 1}
    await conn.rollback()


async def test_schema_scope_rejects_foreign_state(conn: AsyncConnection) -> None:
    await execute_all(
        conn,
        [
            "CREATE TABLE a (id TEXT PRIMARY KEY)",
            "UPDATE _sync_attachment_state SET schema_name = 'other'",
            "INSERT INTO _sync_row_state (schema_name, table_name, key_json)"
            f" VALUES ('{SCHEMA}', 'a', '{{}}')",
        ],
    )
    with pytest.raises(UnsupportedSchemaError) as info:
        await validate(conn, SyncTable("a", "id"))
    await conn.rollback()
    (violation,) = info.value.violations
    assert violation.rule == RULE_SCHEMA_SCOPE
    assert f"schema(s) {SCHEMA}, other while config.Schema={SCHEMA}" in violation.message


async def test_schema_scope_accepts_own_state(conn: AsyncConnection) -> None:
    await execute_all(
        conn,
        [
            "CREATE TABLE a (id TEXT PRIMARY KEY)",
            f"UPDATE _sync_attachment_state SET schema_name = '{SCHEMA}'",
            "INSERT INTO _sync_dirty_rows (schema_name, table_name, key_json, op)"
            " VALUES ('  ', 'a', '{}', 'INSERT')",
        ],
    )
    managed = await validate(conn, SyncTable("a", "id"))
    assert managed.schema == SCHEMA
    await conn.rollback()
