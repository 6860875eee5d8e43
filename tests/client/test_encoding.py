from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client import (
    KeyEncodingError,
    ManagedSchema,
    PayloadEncodingError,
    SyncTable,
    TableInfo,
    delete_row,
    delete_sql,
    local_key_json,
    local_payload_to_wire,
    local_pk_from_key_json,
    local_pk_from_wire_key,
    local_pk_to_sql,
    serialize_row,
    set_apply_mode,
    upsert_row,
    upsert_sql,
    wire_key,
    wire_payload_to_values,
)
from oversync_sa.client.validation import ColumnInfo, ForeignKeyInfo, KeyKind

from .conftest import SIMULATOR_DDL, execute_all, manage, rows

UUID = "00112233-4455-6677-8899-aabbccddeeff"
HEX = "00112233445566778899aabbccddeeff"
OTHER_UUID = "ffeeddcc-bbaa-9988-7766-554433221100"
OTHER_HEX = "ffeeddccbbaa99887766554433221100"

TEXT_TABLE = TableInfo(
    name="docs",
    columns=(ColumnInfo("Id", "TEXT", 1), ColumnInfo("body", "TEXT")),
    key_column="Id",
    key_kind=KeyKind.TEXT,
)
REVIEWS = TableInfo(
    name="file_reviews",
    columns=(
        ColumnInfo("id", "BLOB", 1),
        ColumnInfo("review", "TEXT"),
        ColumnInfo("file_id", "BLOB"),
        ColumnInfo("attachment", "blob"),
        ColumnInfo("score", "REAL"),
        ColumnInfo("n", "INTEGER"),
    ),
    key_column="id",
    key_kind=KeyKind.UUID_BLOB,
    foreign_keys=(ForeignKeyInfo("file_id", "files", "id"),),
)


# ------------------------------------------------------------------------------------ keys


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(st.characters(exclude_categories=("Cs",))))
async def test_local_key_json_matches_sqlite_json_object(conn: AsyncConnection, value: str) -> None:
    expected = await rows(conn, "SELECT json_object('id', ?)", (value,))
    assert local_key_json(TEXT_TABLE, value) == expected[0][0]
    assert local_pk_from_key_json(TEXT_TABLE, local_key_json(TEXT_TABLE, value)) == value
    await conn.rollback()


def test_local_key_json_has_no_html_escaping() -> None:
    assert local_key_json(TEXT_TABLE, "<a&b>\u2028") == '{"id":"<a&b>\u2028"}'


@pytest.mark.parametrize(
    "key_json", ["not json", "[]", '{"id":1}', '{"other":"k"}', '{"id":"k","x":"y"}']
)
def test_local_pk_from_bad_key_json(key_json: str) -> None:
    with pytest.raises(KeyEncodingError, match=r"docs\.Id"):
        local_pk_from_key_json(TEXT_TABLE, key_json)


def test_wire_key_for_text_and_blob_keys() -> None:
    assert wire_key(TEXT_TABLE, "k1") == {"id": "k1"}
    assert wire_key(REVIEWS, HEX) == {"id": UUID}
    assert wire_key(REVIEWS, UUID.upper()) == {"id": UUID}


@pytest.mark.parametrize("local_pk", ["dead", "zz", HEX[:-2]])
def test_wire_key_rejects_non_uuid_blob_keys(local_pk: str) -> None:
    with pytest.raises(KeyEncodingError, match=f'invalid blob UUID pk "{local_pk}"'):
        wire_key(REVIEWS, local_pk)


@pytest.mark.parametrize(
    ("local_pk", "expected"),
    [
        (HEX, bytes.fromhex(HEX)),
        (UUID, bytes.fromhex(HEX)),
        ("{" + UUID.upper() + "}", bytes.fromhex(HEX)),
        ("urn:uuid:" + UUID, bytes.fromhex(HEX)),
        (base64.b64encode(bytes.fromhex(HEX)).decode(), bytes.fromhex(HEX)),
        ("deadbeef", base64.b64decode("deadbeef")),  # base64 wins over hex, as in Go
        ("dead", base64.b64decode("dead")),
        ("abcdef", bytes.fromhex("abcdef")),
    ],
)
def test_local_pk_to_sql_for_blob_keys(local_pk: str, expected: bytes) -> None:
    assert local_pk_to_sql(REVIEWS, local_pk) == expected


def test_local_pk_to_sql_text_and_errors() -> None:
    assert local_pk_to_sql(TEXT_TABLE, "x y") == "x y"
    for bad in ("xyz", "abc", "0011-2233"):
        with pytest.raises(KeyEncodingError, match="invalid blob pk"):
            local_pk_to_sql(REVIEWS, bad)


def test_local_pk_from_wire_key() -> None:
    assert local_pk_from_wire_key(TEXT_TABLE, {"id": "k"}) == "k"
    assert local_pk_from_wire_key(TEXT_TABLE, {"Id": "exact"}) == "exact"
    assert local_pk_from_wire_key(REVIEWS, {"id": UUID}) == HEX
    assert local_pk_from_wire_key(REVIEWS, {"id": UUID.upper()}) == HEX


@pytest.mark.parametrize(
    ("table", "key", "match"),
    [
        (TEXT_TABLE, {}, "string member"),
        (TEXT_TABLE, {"id": 5}, "string member"),
        (REVIEWS, {"id": HEX}, "not a canonical UUID"),
        (REVIEWS, {"id": "{" + UUID + "}"}, "not a canonical UUID"),
        (REVIEWS, {"id": " " + UUID[1:]}, "not a canonical UUID"),
        (REVIEWS, {"id": "urn:uuid:" + UUID}, "not a canonical UUID"),
        (REVIEWS, {"id": UUID.replace("-", "x")}, "not a canonical UUID"),
    ],
)
def test_local_pk_from_bad_wire_key(table: TableInfo, key: dict[str, Any], match: str) -> None:
    with pytest.raises(KeyEncodingError, match=match):
        local_pk_from_wire_key(table, key)


# ------------------------------------------------------------------------- local -> wire


def test_local_payload_to_wire_converts_blobs_only() -> None:
    local = json.dumps(
        {
            "id": HEX,
            "review": "ok",
            "file_id": OTHER_HEX,
            "attachment": "68656c6c6f",
            "score": 1.0,
            "n": 12345678901234567,
        }
    )
    assert local_payload_to_wire(REVIEWS, local) == {
        "id": UUID,
        "review": "ok",
        "file_id": OTHER_UUID,
        "attachment": "aGVsbG8=",
        "score": 1.0,
        "n": 12345678901234567,
    }
    empty = '{"id":"","review":null,"file_id":null,"attachment":"","score":null,"n":null}'
    assert local_payload_to_wire(REVIEWS, empty.encode()) == json.loads(empty)


@pytest.mark.parametrize(
    ("payload", "message", "column"),
    [
        ("nope", "local payload is not valid JSON", None),
        ("[1]", "local payload must be a JSON object", None),
        ('{"attachment":"abc"}', "failed to decode hex for column attachment", "attachment"),
        ('{"attachment":"zz"}', "failed to decode hex for column attachment", "attachment"),
        ('{"id":"dead"}', "failed to decode blob UUID pk for column id", "id"),
        (
            '{"file_id":"dead"}',
            "failed to decode blob UUID reference for column file_id",
            "file_id",
        ),
    ],
)
def test_local_payload_to_wire_errors(payload: str, message: str, column: str | None) -> None:
    with pytest.raises(PayloadEncodingError, match=message) as info:
        local_payload_to_wire(REVIEWS, payload, key=HEX)
    assert info.value.column == column
    assert info.value.key == HEX
    assert info.value.table == "file_reviews"


# ------------------------------------------------------------------------- wire -> local


WIRE_ROW = {
    "id": UUID,
    "review": "ok",
    "file_id": UUID.upper(),
    "attachment": "aGVsbG8=",
    "score": 2,
    "n": 3,
}


def test_wire_payload_to_values() -> None:
    expected = (bytes.fromhex(HEX), "ok", bytes.fromhex(HEX), b"hello", 2, 3)
    assert wire_payload_to_values(REVIEWS, WIRE_ROW) == expected
    raw = msgspec.json.encode(WIRE_ROW)
    assert wire_payload_to_values(REVIEWS, raw) == expected
    assert wire_payload_to_values(REVIEWS, raw.decode()) == expected
    assert wire_payload_to_values(REVIEWS, msgspec.Raw(raw)) == expected

    values = wire_payload_to_values(
        REVIEWS, {**WIRE_ROW, "attachment": "", "file_id": None, "score": 1.5, "n": True}
    )
    assert values[2:] == (None, b"", 1.5, 1)
    assert type(values[5]) is int
    big = wire_payload_to_values(REVIEWS, {**WIRE_ROW, "n": 2**70})
    assert big[5] == float(2**70)


@pytest.mark.parametrize(
    ("payload", "message", "column"),
    [
        ("nope", "wire payload is not valid JSON", None),
        (b"[1]", "wire payload must be a JSON object", None),
        ({"id": UUID}, "must contain every table column", None),
        ({**WIRE_ROW, "extra": 1}, "must contain every table column", None),
        (
            {**{k: v for k, v in WIRE_ROW.items() if k != "n"}, "N": 1},
            "payload for file_reviews is missing column n",
            "n",
        ),
        ({**WIRE_ROW, "n": [1]}, "payload field n must be a JSON scalar", "n"),
        ({**WIRE_ROW, "review": {"a": 1}}, "payload field review must be a JSON scalar", "review"),
        ({**WIRE_ROW, "id": HEX}, "failed to decode canonical wire UUID payload field id", "id"),
        (
            {**WIRE_ROW, "file_id": 7},
            "failed to decode canonical wire UUID payload field file_id",
            "file_id",
        ),
        (
            {**WIRE_ROW, "attachment": "68656c6c6f"},
            "failed to decode canonical wire blob payload field attachment",
            "attachment",
        ),
        (
            {**WIRE_ROW, "attachment": "aGVsbG8"},
            "failed to decode canonical wire blob payload field attachment",
            "attachment",
        ),
        (
            {**WIRE_ROW, "attachment": "aGVsbG9="},
            "failed to decode canonical wire blob payload field attachment",
            "attachment",
        ),
        (
            {**WIRE_ROW, "attachment": 5},
            "failed to decode canonical wire blob payload field attachment",
            "attachment",
        ),
    ],
)
def test_wire_payload_to_values_errors(payload: Any, message: str, column: str | None) -> None:
    with pytest.raises(PayloadEncodingError, match=message) as info:
        wire_payload_to_values(REVIEWS, payload, key="k")
    assert info.value.column == column


# ------------------------------------------------------------------------- statements


def test_statement_builders() -> None:
    assert upsert_sql(TEXT_TABLE) == (
        'INSERT INTO "docs" ("Id", "body") VALUES (?, ?)'
        ' ON CONFLICT ("Id") DO UPDATE SET "body" = excluded."body"'
    )
    only_key = TableInfo("k", (ColumnInfo("id", "TEXT", 1),), "id", KeyKind.TEXT)
    assert upsert_sql(only_key) == 'INSERT INTO "k" ("id") VALUES (?) ON CONFLICT ("id") DO NOTHING'
    assert delete_sql(TEXT_TABLE) == 'DELETE FROM "docs" WHERE "Id" = ?'


async def simulator(conn: AsyncConnection) -> ManagedSchema:
    await execute_all(conn, SIMULATOR_DDL.values())
    return await manage(conn, [SyncTable(name, "id") for name in SIMULATOR_DDL])


async def test_upsert_keeps_cascading_children_and_delete_removes(conn: AsyncConnection) -> None:
    managed = await simulator(conn)
    files, reviews = managed.table("files"), managed.table("file_reviews")
    await set_apply_mode(conn, True)
    await upsert_row(conn, files, {"id": UUID, "name": "a", "data": "aGVsbG8="})
    await upsert_row(conn, reviews, {"id": OTHER_UUID, "review": "r", "file_id": UUID})
    await upsert_row(conn, files, {"id": UUID, "name": "b", "data": ""})
    await set_apply_mode(conn, False)
    await conn.commit()
    assert await rows(conn, "SELECT name, data FROM files") == [("b", b"")]
    assert await rows(conn, "SELECT count(*) FROM file_reviews") == [(1,)]
    assert await rows(conn, "SELECT count(*) FROM _sync_dirty_rows") == [(0,)]

    await delete_row(conn, files, HEX)
    await conn.commit()
    assert await rows(conn, "SELECT count(*) FROM files") == [(0,)]
    assert await rows(conn, "SELECT count(*) FROM file_reviews") == [(0,)]


async def test_serialize_row_matches_trigger_payload(conn: AsyncConnection) -> None:
    managed = await simulator(conn)
    typed = managed.table("typed_rows")
    await conn.exec_driver_sql(
        "INSERT INTO typed_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ("t1", "n<&>", None, 42, 1, 0.1 + 0.2, b"\x00\xff", "2026-03-24 18:42:11"),
    )
    # TEXT stored in a BLOB column: the trigger hex-encodes its text form.
    await conn.exec_driver_sql(
        "INSERT INTO typed_rows VALUES ('t2', 'x', 'n', NULL, 0, 1e300, 'abc', NULL)"
    )
    await conn.commit()
    captured = dict(
        (str(k), str(p))
        for k, p in await rows(conn, "SELECT key_json, payload FROM _sync_dirty_rows")
    )
    # REAL is captured losslessly (17 digits), not with SQLite's 15 (CLIENT.md §12.38).
    assert captured['{"id":"t1"}'] == (
        '{"id":"t1","name":"n<&>","note":null,"count_value":42,"enabled_flag":1,'
        '"rating":0.30000000000000004,"data":"00ff","created_at":"2026-03-24 18:42:11"}'
    )
    assert '"data":"616263"' in captured['{"id":"t2"}']
    for pk in ("t1", "t2"):
        assert await serialize_row(conn, typed, pk) == captured[local_key_json(typed, pk)]
    assert await serialize_row(conn, typed, "missing") is None
    await conn.rollback()


async def test_round_trip_through_the_wire(conn: AsyncConnection) -> None:
    managed = await simulator(conn)
    reviews, files = managed.table("file_reviews"), managed.table("files")
    await conn.exec_driver_sql(
        "INSERT INTO files VALUES (?, 'f', x'01020304')", (bytes.fromhex(HEX),)
    )
    await conn.exec_driver_sql(
        "INSERT INTO file_reviews VALUES (?, 'good', ?)",
        (bytes.fromhex(OTHER_HEX), bytes.fromhex(HEX)),
    )
    await conn.commit()
    captured = {
        str(t): str(p)
        for t, p in await rows(conn, "SELECT table_name, payload FROM _sync_dirty_rows")
    }
    wire = local_payload_to_wire(reviews, captured["file_reviews"])
    assert wire == {"id": OTHER_UUID, "review": "good", "file_id": UUID}
    assert local_payload_to_wire(files, captured["files"])["data"] == "AQIDBA=="

    await conn.exec_driver_sql("DELETE FROM _sync_dirty_rows")
    await set_apply_mode(conn, True)
    await upsert_row(conn, reviews, {**wire, "review": "better"})
    await set_apply_mode(conn, False)
    await conn.commit()
    expected = captured["file_reviews"].replace("good", "better")
    assert await serialize_row(conn, reviews, OTHER_HEX) == expected
    assert await serialize_row(conn, reviews, OTHER_UUID) == expected
    await conn.rollback()
