"""Wire canonicalisation of payloads (§3.4): pure rules and PostgreSQL rendering per type."""

from __future__ import annotations

import json

import pytest

from oversync_sa.server import SyncService
from oversync_sa.server.payload import (
    canonicalize_wire_payload,
    decode_stored_binary,
    wire_payload,
)
from oversync_sa.wire.errors import WireFormatError
from tests.server.bundles._support import exec_write, sql

TYPES = {"id": "uuid", "data": "bytea", "blob": "bytea", "name": "text"}


def test_untouched_input_is_returned_as_the_same_bytes() -> None:
    pg_text = b'{"id": "x", "name": "a", "data": "AAE="}'
    assert canonicalize_wire_payload(pg_text, TYPES) is pg_text
    assert canonicalize_wire_payload(b"null", TYPES) == b"null"
    assert canonicalize_wire_payload(b"", TYPES) == b""


@pytest.mark.parametrize("column", ["_sync_scope_id", "_SYNC_Scope_ID", "_\u017fync_scope_id"])
def test_scope_column_is_stripped_case_insensitively(column: str) -> None:
    payload = json.dumps({column: "alice", "name": "a", "n": 12.50}).encode()
    assert canonicalize_wire_payload(payload, TYPES) == b'{"n":12.5,"name":"a"}'


def test_bytea_hex_becomes_base64_and_null_stays() -> None:
    payload = b'{"data": "\\\\x0011FF", "blob": null, "name": "\\\\x00"}'
    assert canonicalize_wire_payload(payload, TYPES) == (
        b'{"blob":null,"data":"ABH/","name":"\\\\x00"}'
    )


def test_bytea_base64_with_newlines_is_normalised() -> None:
    assert canonicalize_wire_payload(b'{"data": "AB\\nH/"}', TYPES) == b'{"data":"ABH/"}'


@pytest.mark.parametrize(
    "payload",
    [b'{"data": 5}', b'{"data": "\\\\x0"}', b'{"data": "A"}', b'{"data": "@@@="}', b"[1]", b"{"],
)
def test_malformed_payloads_are_rejected(payload: bytes) -> None:
    with pytest.raises(WireFormatError):
        canonicalize_wire_payload(payload, TYPES)


@pytest.mark.parametrize("column", ["_Sync_Scope_Id", "_\u017fync_scope_id"])
def test_wire_payload_strips_scope_member_even_without_bytea_columns(column: str) -> None:
    payload = json.dumps({column: "alice", "n": 1.50, "s": "<"})
    assert wire_payload(payload, {"n": "numeric"}) == b'{"n":1.5,"s":"\\u003c"}'
    assert wire_payload('{"n": 1.50}', {"n": "numeric"}) == b'{"n":1.5}'


def test_decode_stored_binary_accepts_upper_hex_prefix() -> None:
    assert decode_stored_binary("\\Xff00") == b"\xff\x00"


async def test_captured_payload_rendering_per_column_type(service: SyncService) -> None:
    row_id = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"  # PostgreSQL lower-cases uuids on output
    bundle = await exec_write(
        service,
        "alice",
        sql(
            "SET LOCAL TimeZone = 'UTC';"
            "INSERT INTO business.typed_rows (id, name, big, small, price, rating, enabled, "
            "happened_at, day, data, doc, raw_doc, other) VALUES ("
            f"'{row_id}', 'Zoë <b>', 9007199254740993, -7, 12.50, 2.5, true, "
            "'2026-03-24 18:42:11.120+00', '2026-03-24', '\\x0011ff', "
            '\'{"b": [1, 2.0, {"z": null}], "a": "x"}\', \'{"k": 1e21}\', NULL)'
        ),
    )
    payload = bytes(bundle.rows[0].payload)
    # Integers beyond 2^53 keep their digits (Go renders float64s: big ...992 and, after
    # to_jsonb turned the json 1e21 into a numeric, raw_doc 1e+21; SERVER.md §11.3).
    assert payload == (
        b'{"big":9007199254740993,"data":"ABH/","day":"2026-03-24",'
        b'"doc":{"a":"x","b":[1,2,{"z":null}]},"enabled":true,'
        b'"happened_at":"2026-03-24T18:42:11.12+00:00",'
        b'"id":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","name":"Zo\xc3\xab \\u003cb\\u003e",'
        b'"other":null,"price":12.5,"rating":2.5,"raw_doc":{"k":1000000000000000000000},'
        b'"small":-7}'
    )
    assert b"_sync_scope_id" not in payload
    assert bundle.rows[0].key == {"id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}
