"""Column typing, BLOB/UUID keys, custom key columns and typed payloads: behaviours pinned by
go-oversync's ``oversqlite/table_info_test.go``, ``blob_test.go``,
``blob_uuid_pk_parity_test.go``, ``custom_pk_test.go`` and ``typed_payload_parity_test.go``
that had no counterpart here (each docstring names the Go test it ports)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client import SyncTable, serialize_row, trigger_names
from oversync_sa.client.validation import ColumnInfo
from tests.client.lifecycle.fakes import (
    CONFIG,
    FakeServer,
    attached,
    closing,
    make_client,
    ok,
    scalar,
)

from .conftest import SIMULATOR_DDL, execute_all, manage, rows


@pytest.mark.parametrize(
    ("declared", "blob"),
    [
        ("BLOB", True),
        ("blob", True),
        ("Blob", True),
        ("BYTEA", False),
        ("TEXT", False),
        ("INTEGER", False),
        ("REAL", False),
        ("VARCHAR(255) blob", True),
        ("", False),
        ("NULL", False),
        ("CUSTOM_BLOB_TYPE", True),
        ("MYBLOB", True),
        ("blobdata", True),
    ],
)
def test_blob_columns_are_recognised_by_a_blob_substring(declared: str, blob: bool) -> None:
    """TestColumnInfo_IsBlob: the declared type contains ``blob`` in any case."""
    assert ColumnInfo("c", declared).is_blob is blob


async def test_mixed_case_columns_become_lower_case_payload_members(
    conn: AsyncConnection,
) -> None:
    """TestTableInfo_ColumnNamesLower: declared spellings and types are kept for SQL, payload
    members are the lower-cased names."""
    await execute_all(conn, [
        "CREATE TABLE MixedCase (ID TEXT PRIMARY KEY, UserName TEXT, EMAIL_ADDRESS TEXT,"
        " created_at INTEGER)",
    ])
    managed = await manage(conn, [SyncTable("MixedCase", "ID")])
    info = managed.table("mixedcase")
    assert info.column_names == ("ID", "UserName", "EMAIL_ADDRESS", "created_at")
    assert [c.json_name for c in info.columns] == ["id", "username", "email_address", "created_at"]
    assert [c.declared_type for c in info.columns] == ["TEXT", "TEXT", "TEXT", "INTEGER"]

    await execute_all(conn, ["INSERT INTO MixedCase VALUES ('k', 'Ann', 'a@x', 5)"])

    assert await rows(conn, "SELECT key_json, payload FROM _sync_dirty_rows") == [(
        '{"id":"k"}', '{"id":"k","username":"Ann","email_address":"a@x","created_at":5}'
    )]


async def test_blob_key_and_blob_columns_are_captured_as_lower_case_hex(
    conn: AsyncConnection,
) -> None:
    """TestBlobPrimaryKeySupport."""
    await execute_all(conn, [SIMULATOR_DDL["files"]])
    await manage(conn, [SyncTable("files", "id")])
    file_id, data = os.urandom(16), os.urandom(256)
    await conn.exec_driver_sql(
        "INSERT INTO files (id, name, data) VALUES (?, ?, ?)",
        (file_id, "test-document.pdf", data),
    )
    await conn.commit()

    ((key_json, op, payload),) = await rows(
        conn, "SELECT key_json, op, payload FROM _sync_dirty_rows"
    )
    assert key_json == json.dumps({"id": file_id.hex()}, separators=(",", ":"))
    assert op == "INSERT"
    assert json.loads(str(payload)) == {
        "id": file_id.hex(), "name": "test-document.pdf", "data": data.hex(),
    }


CUSTOM_KEY_DDL = (
    "CREATE TABLE users (user_uuid TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT)",
    "CREATE TABLE products (product_code TEXT PRIMARY KEY, name TEXT NOT NULL, price REAL)",
    "CREATE TABLE posts (id TEXT PRIMARY KEY, title TEXT NOT NULL, content TEXT)",
)


async def test_triggers_are_generated_for_custom_key_columns(conn: AsyncConnection) -> None:
    """TestCustomPrimaryKeyColumns, TestTriggerGenerationWithCustomPK and
    TestTemplateBasedTriggerGeneration: six triggers per table, keyed on the configured
    column (never a hard-coded ``id``)."""
    await execute_all(conn, CUSTOM_KEY_DDL)
    managed = await manage(conn, [
        SyncTable("users", "user_uuid"), SyncTable("products", "product_code"),
        SyncTable("posts", "id"),
    ])
    assert {t.name: t.key_column for t in managed.tables} == {
        "users": "user_uuid", "products": "product_code", "posts": "id",
    }
    installed = await rows(conn, "SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'")
    assert sorted(installed) == sorted(
        (table, name) for table in ("users", "products", "posts") for name in trigger_names(table)
    )

    sql = dict(await rows(
        conn, "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'products'"
        " AND type = 'trigger'",
    ))
    assert 'NEW."product_code"' in str(sql["trg_products_ai"])
    assert 'NEW."id"' not in str(sql["trg_products_ai"])
    assert 'NEW."product_code"' in str(sql["trg_products_au"])
    assert 'OLD."product_code"' in str(sql["trg_products_ad"])
    await conn.rollback()


async def test_capture_follows_a_custom_key_column(conn: AsyncConnection) -> None:
    """TestTriggersWithCustomPKFunctionality: INSERT, then UPDATE (still INSERT), then DELETE
    (a queued DELETE until the freeze drops the no-op), all under ``{"item_code": ...}``."""
    await execute_all(conn, [
        "CREATE TABLE test_items (item_code TEXT PRIMARY KEY, name TEXT NOT NULL,"
        " quantity INTEGER DEFAULT 0)",
    ])
    await manage(conn, [SyncTable("test_items", "item_code")])
    query = "SELECT key_json, op FROM _sync_dirty_rows WHERE table_name = 'test_items'"
    key = '{"item_code":"ITEM001"}'

    await execute_all(conn, ["INSERT INTO test_items VALUES ('ITEM001', 'Test Item', 5)"])
    assert await rows(conn, query) == [(key, "INSERT")]
    await execute_all(conn, ["UPDATE test_items SET quantity = 10 WHERE item_code = 'ITEM001'"])
    assert await rows(conn, query) == [(key, "INSERT")]
    await execute_all(conn, ["DELETE FROM test_items WHERE item_code = 'ITEM001'"])
    assert await rows(conn, query) == [(key, "DELETE")]


async def test_serialized_typed_row_keeps_real_null_blob_and_offset_timestamp(
    conn: AsyncConnection,
) -> None:
    """TestSerializeRowInTx_TypedRows_PreservesNullBlobAndTimestampText (Go's exact row)."""
    await execute_all(conn, [SIMULATOR_DDL["typed_rows"]])
    managed = await manage(conn, [SyncTable("typed_rows", "id")])
    await conn.exec_driver_sql(
        "INSERT INTO typed_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ("typed-1", "Ada", None, None, 1, 6.57111473696007, None, "2026-03-24T10:42:11-08:00"),
    )

    payload = await serialize_row(conn, managed.table("typed_rows"), "typed-1")

    assert payload is not None
    assert json.loads(payload) == {
        "id": "typed-1", "name": "Ada", "note": None, "count_value": None, "enabled_flag": 1,
        "rating": 6.57111473696007, "data": None, "created_at": "2026-03-24T10:42:11-08:00",
    }
    await conn.rollback()


BLOB_DDL = (
    "CREATE TABLE IF NOT EXISTS files (id BLOB PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
    " data BLOB)",
    "CREATE TABLE IF NOT EXISTS file_reviews (id BLOB PRIMARY KEY NOT NULL,"
    " file_id BLOB NOT NULL, review TEXT NOT NULL,"
    " FOREIGN KEY (file_id) REFERENCES files(id) ON DELETE CASCADE)",
)
FILE_UUID = "00112233-4455-6677-8899-aabbccddeeff"
FILE_HEX = FILE_UUID.replace("-", "")
REVIEW_UUID = "ffeeddcc-bbaa-9988-7766-554433221100"


def blob_row(table: str, key: str, version: int, op: str, payload: Any) -> dict[str, Any]:
    return {"schema": "business", "table": table, "key": {"id": key}, "op": op,
            "row_version": version, "payload": payload}


async def test_pulled_uuid_string_keys_are_stored_as_bytes_with_hex_row_state(
    tmp_path: Path, server: FakeServer
) -> None:
    """TestApplyBundleRowAuthoritativelyInTx_BlobUUIDPK_ServerSendsUUIDString: dashed UUIDs on
    the wire become 16-byte BLOBs locally, row state is keyed by lower-case hex, and a pulled
    DELETE leaves a tombstone at the committed version."""
    import sqlite3

    path = tmp_path / "blob.db"
    with sqlite3.connect(path) as raw:
        for statement in BLOB_DDL:
            raw.execute(statement)
    config = replace(CONFIG, tables=(SyncTable("files", "id"), SyncTable("file_reviews", "id")))
    async with closing(await make_client(path, server, config)) as client:
        await attached(client, server)
        server.queue("GET /api/sync/pull", ok({"stable_bundle_seq": 1, "has_more": False,
                                                "bundles": [{
            "bundle_seq": 1, "source_id": "peer", "source_bundle_id": 1, "rows": [
                blob_row("files", FILE_UUID, 10, "INSERT",
                         {"id": FILE_UUID, "name": "a.txt", "data": "aGVsbG8="}),
                blob_row("file_reviews", REVIEW_UUID, 11, "INSERT",
                         {"id": REVIEW_UUID, "file_id": FILE_UUID, "review": "ok"}),
            ]}]}))
        await client.pull_to_stable()

        async with client.runtime.engine.connect() as conn:
            assert await rows(conn, "SELECT lower(hex(id)), name, data FROM files") == [
                (FILE_HEX, "a.txt", b"hello")
            ]
            assert await rows(conn, "SELECT lower(hex(file_id)) FROM file_reviews") == [
                (FILE_HEX,)
            ]
        state = (
            "SELECT deleted || ':' || row_version FROM _sync_row_state WHERE table_name = 'files'"
            f" AND key_json = '{{\"id\":\"{FILE_HEX}\"}}'"
        )
        assert await scalar(client, state) == "0:10"

        server.queue("GET /api/sync/pull", ok({"stable_bundle_seq": 2, "has_more": False,
                                                "bundles": [{
            "bundle_seq": 2, "source_id": "peer", "source_bundle_id": 2, "rows": [
                blob_row("files", FILE_UUID, 12, "DELETE", None),
            ]}]}))
        await client.pull_to_stable()

        assert await scalar(client, "SELECT COUNT(*) FROM files") == 0
        assert await scalar(client, state) == "1:12"
        assert await scalar(client, "SELECT COUNT(*) FROM _sync_dirty_rows") == 0
