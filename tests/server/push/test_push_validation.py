"""Chunk validation (SERVER.md §5.2): order of checks, messages and the apply payload form."""

from __future__ import annotations

import binascii

import pytest

from oversync_sa.errors import PushChunkInvalidError
from oversync_sa.server.push_validation import decode_go_base64, validate_chunk
from oversync_sa.server.runtime_info import RuntimeTable, SyncRuntime
from oversync_sa.wire.keys import Op
from oversync_sa.wire.models import PushRequestRow, PushSessionChunkRequest
from tests.server.push._support import row, uid

RUNTIME = SyncRuntime(
    tables=(
        RuntimeTable("business", "files", "id", "uuid", 3),
        RuntimeTable("business", "users", "id", "uuid", 8),
        RuntimeTable("public", "tags", "code", "text", 9),
    ),
    column_types={"business.files": {"id": "uuid", "name": "text", "data": "bytea"}},
)
K = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"


def _check(*rows: PushRequestRow, start: int = 0, max_rows: int = 5000) -> list[object]:
    return list(validate_chunk(
        PushSessionChunkRequest(start_row_ordinal=start, rows=list(rows)), RUNTIME, max_rows
    ))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": -1, "rows": [row("users", K, payload={})]}, "start_row_ordinal must be >= 0"),
        ({"rows": []}, "rows must not be empty"),
        ({"rows": [row("users", K, payload={})] * 3, "max_rows": 2},
         "rows length 3 exceeds max_rows_per_push_chunk 2"),
        ({"rows": [row("users", K, payload={}, schema="Bad-Schema")]},
         'invalid schema name "Bad-Schema"'),
        ({"rows": [row("us ers", K, payload={})]}, 'invalid table name "us ers"'),
        ({"rows": [row("posts", K, payload={})]}, "table business.posts is not registered"),
        ({"rows": [row("users", K, op="UPSERT", payload={})]}, 'invalid op "UPSERT"'),
        ({"rows": [row("users", K, payload={}, raw_key={"uuid": K})]},
         'row key for business.users must include "id"'),
        ({"rows": [row("users", K, payload={}, raw_key={"id": 7})]},
         "row key business.users.id must be a string"),
        ({"rows": [row("users", K.upper(), payload={})]},
         "row key business.users.id must use canonical dashed lowercase UUID text"),
        ({"rows": [row("users", "{" + K + "}", payload={})]}, "canonical dashed lowercase"),
        ({"rows": [row("users", K, payload={}), row("users", K, op="DELETE")]},
         f"duplicate target row in push request: business.users {K}"),
        ({"rows": [row("users", K, op="DELETE", payload=b"null")]},
         "DELETE for business.users must not include payload"),
        ({"rows": [row("users", K, op="UPDATE")]}, "UPDATE for business.users requires payload"),
        ({"rows": [row("users", K, payload=b"null")]},
         "payload for business.users must be a JSON object"),
        ({"rows": [row("users", K, payload=[1])]}, "must be a JSON object"),
        ({"rows": [row("users", K, payload={"_sync_scope_id": "x"})]},
         'payload for business.users must not include hidden scope column "_sync_scope_id"'),
        ({"rows": [row("users", K, payload={"id": uid(2)})]},
         "payload key business.users.id must match request key"),
        ({"rows": [row("users", K, payload={"id": 5})]}, "must match request key"),
        ({"rows": [row("users", K, payload={"bad-col": 1})]},
         'payload for business.users contains invalid column "bad-col"'),
        ({"rows": [row("files", K, payload={"data": 12})]},
         "payload binary field business.files.data must be a base64 string"),
        ({"rows": [row("files", K, payload={"data": "AB-_"})]},
         "payload binary field business.files.data must be valid base64"),
        ({"rows": [row("files", K, payload={"data": "QQ"})]}, "must be valid base64"),
        # Beyond Go: what the commit could never apply is refused here (docs/interop.md).
        ({"rows": [row("files", K, payload={"nope": 1})]},
         'payload for business.files contains unknown column "nope"'),
        ({"rows": [row("files", K, payload={"name": "a", "Name": "b"})]},
         'payload for business.files names column "name" twice ("Name" and "name")'),
        ({"rows": [row("files", K, payload={"_Sync_Scope_Id": "x"})]},
         'must not include hidden scope column "_Sync_Scope_Id"'),
        ({"rows": [row("users", K, payload={"n": ["ok", {"k": "a\u0000"}]})]},
         "payload value business.users.n contains a NUL character"),
    ],
)
def test_invalid_chunks_are_rejected_with_the_contract_message(
    kwargs: dict[str, object], message: str
) -> None:
    kwargs = dict(kwargs)
    rows = kwargs.pop("rows")
    assert isinstance(rows, list)
    with pytest.raises(PushChunkInvalidError) as caught:
        _check(*rows, **kwargs)  # type: ignore[arg-type]
    assert message in caught.value.message


def test_first_failing_row_wins() -> None:
    with pytest.raises(PushChunkInvalidError, match="invalid op"):
        _check(row("users", K, op="nope"), row("posts", K, payload={}))


def test_valid_rows_are_normalised_into_apply_form() -> None:
    rows = _check(
        row(" Users ", K, op=" insert ", payload=b'{"name":"A","n":1.50,"Email":"<x>"}',
            schema=" BUSINESS "),
        row("files", uid(2), op="update", base=4,
            payload={"id": uid(2), "data": "AAH/\r\n", "name": None}),
        row("tags", "", op="Delete", base=3, schema="", raw_key={"code": "Ünïcode key"}),
    )
    first, second, third = rows
    assert first.table.name == "business.users"  # type: ignore[attr-defined]
    assert first.op is Op.INSERT  # type: ignore[attr-defined]
    # key added, numbers as float64, Go escaping, sorted keys; member names lower-cased so
    # "Email" reaches column email (Go keeps the case and writes NULL, SERVER.md §11.20)
    assert first.payload == (  # type: ignore[attr-defined]
        b'{"email":"\\u003cx\\u003e","id":"' + K.encode() + b'","n":1.5,"name":"A"}'
    )
    assert first.columns == ("email", "id", "n", "name")  # type: ignore[attr-defined]
    assert second.payload == (  # type: ignore[attr-defined]
        b'{"data":"\\\\x0001ff","id":"' + uid(2).encode() + b'","name":null}'
    )
    assert second.base_row_version == 4  # type: ignore[attr-defined]
    assert third.table.name == "public.tags"  # type: ignore[attr-defined]
    assert third.key_bytes == "Ünïcode key".encode()  # type: ignore[attr-defined]
    assert third.payload is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", b""), ("QQ==", b"A"), ("Q\nQ=\r=", b"A"), ("+/8=", b"\xfb\xff")],
)
def test_go_base64_accepts_standard_padded_text(text: str, expected: bytes) -> None:
    assert decode_go_base64(text) == expected


@pytest.mark.parametrize("text", ["QQ", "QQ===", "-_8=", "QQ==QQ==", "Q Q==", "=QQ="])
def test_go_base64_rejects_everything_else(text: str) -> None:
    with pytest.raises(binascii.Error):
        decode_go_base64(text)
