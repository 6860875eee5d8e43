"""Go ``encoding/json`` rules of the request decoder (SERVER.md §11.26)."""

from __future__ import annotations

import pytest

from oversync_sa.litestar.decoding import DecodeError, decode_request
from oversync_sa.wire import (
    ConnectRequest,
    PushSessionChunkRequest,
    PushSessionCreateRequest,
    SnapshotSessionCreateRequest,
    SourceReplacementReason,
)

_ROW = (
    b'{"schema":"business","table":"users","key":{"id":"k1"},"op":"INSERT",'
    b'"base_row_version":0,"payload":{"name": "A <b>", "n": 1.50}}'
)


def test_happy_chunk_keeps_raw_payload_bytes() -> None:
    req = decode_request(b'{"start_row_ordinal":4,"rows":[' + _ROW + b"]}", PushSessionChunkRequest)
    assert type(req) is PushSessionChunkRequest
    assert req.start_row_ordinal == 4
    row = req.rows[0]
    assert (row.schema, row.table, row.key, row.op) == ("business", "users", {"id": "k1"}, "INSERT")
    assert bytes(row.payload) == b'{"name": "A <b>", "n": 1.50}'


def test_member_names_match_case_insensitively_at_every_depth() -> None:
    body = b'{"START_ROW_ORDINAL":2,"Rows":[{"Schema":"s","TABLE":"t","op":"DELETE"}]}'
    req = decode_request(body, PushSessionChunkRequest)
    assert req.start_row_ordinal == 2
    assert (req.rows[0].schema, req.rows[0].table, req.rows[0].op) == ("s", "t", "DELETE")
    assert bytes(req.rows[0].payload) == b""


def test_exact_name_wins_over_folded_name() -> None:
    req = decode_request(b'{"Planned_Row_Count":1,"planned_row_count":2}', PushSessionCreateRequest)
    assert req.planned_row_count == 2


def test_unknown_members_are_ignored() -> None:
    req = decode_request(b'{"has_local_pending_rows":true,"source_id":"x","z":[1]}', ConnectRequest)
    assert req.has_local_pending_rows is True


def test_missing_members_are_zero_values() -> None:
    req = decode_request(b"{}", PushSessionChunkRequest)
    assert (req.start_row_ordinal, req.rows) == (0, [])


def test_null_member_leaves_default_but_null_payload_is_kept() -> None:
    body = b'{"source_bundle_id":null,"planned_row_count":3,"initialization_id":null}'
    req = decode_request(body, PushSessionCreateRequest)
    assert (req.source_bundle_id, req.planned_row_count, req.initialization_id) == (0, 3, "")
    chunk = decode_request(b'{"rows":[{"op":"DELETE","payload":null}]}', PushSessionChunkRequest)
    # Go's RawMessage receives the literal null, so the row is later rejected as DELETE+payload.
    assert bytes(chunk.rows[0].payload) == b"null"


def test_null_after_value_keeps_earlier_value() -> None:
    body = b'{"planned_row_count":3,"Planned_Row_Count":null}'
    req = decode_request(body, PushSessionCreateRequest)
    assert req.planned_row_count == 3


@pytest.mark.parametrize("body", [b"null", b" null "])
def test_top_level_null_is_zero_request(body: bytes) -> None:
    assert decode_request(body, PushSessionCreateRequest) == PushSessionCreateRequest(
        source_bundle_id=0, planned_row_count=0
    )


@pytest.mark.parametrize("literal", [b"1.0", b"1e2", b"true", b'"1"', b"[1]", b"{}"])
def test_integers_must_be_json_integers(literal: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_request(b'{"source_bundle_id":' + literal + b"}", PushSessionCreateRequest)


@pytest.mark.parametrize(
    ("literal", "expected"),
    [(b"9223372036854775807", 2**63 - 1), (b"-9223372036854775808", -(2**63))],
)
def test_int64_bounds_are_accepted(literal: bytes, expected: int) -> None:
    req = decode_request(b'{"source_bundle_id":' + literal + b"}", PushSessionCreateRequest)
    assert req.source_bundle_id == expected


@pytest.mark.parametrize("literal", [b"9223372036854775808", b"-9223372036854775809"])
def test_integers_outside_int64_are_rejected(literal: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_request(b'{"source_bundle_id":' + literal + b"}", PushSessionCreateRequest)


@pytest.mark.parametrize("literal", [b'"true"', b"1", b"0"])
def test_bool_must_be_json_bool(literal: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_request(b'{"has_local_pending_rows":' + literal + b"}", ConnectRequest)


def test_nested_wrong_type_is_rejected() -> None:
    body = b'{"rows":[{"key":{"id":1},"base_row_version":"0"}]}'
    with pytest.raises(DecodeError):
        decode_request(body, PushSessionChunkRequest)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_rejected(constant: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_request(b'{"rows":[{"payload":{"x":' + constant + b"}}]}", PushSessionChunkRequest)


def test_trailing_bytes_after_first_value_are_ignored() -> None:
    req = decode_request(b'{"has_local_pending_rows":true} xyz', ConnectRequest)
    assert req.has_local_pending_rows is True
    req = decode_request(b'{"has_local_pending_rows":true}{"has_local_pending_rows":false}',
                         ConnectRequest)
    assert req.has_local_pending_rows is True


def test_trailing_bytes_rejected_when_asked() -> None:
    with pytest.raises(DecodeError):
        decode_request(b"{} xyz", SnapshotSessionCreateRequest, trailing="reject", unknown="reject")
    req = decode_request(b"{} \n", SnapshotSessionCreateRequest, trailing="reject")
    assert req.source_replacement is None


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_empty_body_is_an_error_unless_allowed(body: bytes) -> None:
    with pytest.raises(DecodeError, match="empty"):
        decode_request(body, ConnectRequest)
    assert decode_request(body, SnapshotSessionCreateRequest, allow_empty=True) == (
        SnapshotSessionCreateRequest()
    )


@pytest.mark.parametrize("body", [b"{", b'{"a":}', b"[1,]", b"{'a':1}", b"xyz"])
def test_malformed_json_is_rejected(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_request(body, ConnectRequest)


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"1", b"true"])
def test_top_level_non_object_is_rejected(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_request(body, ConnectRequest)


def test_unknown_members_rejected_at_any_depth_when_asked() -> None:
    ok = (
        b'{"Source_Replacement":{"previous_source_id":"a","NEW_SOURCE_ID":"b",'
        b'"reason":"source_retired"}}'
    )
    req = decode_request(ok, SnapshotSessionCreateRequest, unknown="reject")
    assert req.source_replacement is not None
    assert req.source_replacement.new_source_id == "b"
    assert req.source_replacement.reason is SourceReplacementReason.SOURCE_RETIRED
    with pytest.raises(DecodeError, match="unknown member 'extra'"):
        decode_request(b'{"extra":1}', SnapshotSessionCreateRequest, unknown="reject")
    nested = b'{"source_replacement":{"previous_source_id":"a","x":1}}'
    with pytest.raises(DecodeError, match="unknown member 'x'"):
        decode_request(nested, SnapshotSessionCreateRequest, unknown="reject")


def test_invalid_enum_value_is_rejected() -> None:
    body = b'{"source_replacement":{"previous_source_id":"a","new_source_id":"b","reason":"x"}}'
    with pytest.raises(DecodeError):
        decode_request(body, SnapshotSessionCreateRequest)


def test_invalid_utf8_is_replaced_byte_by_byte() -> None:
    req = decode_request(b'{"initialization_id":"\xe2\x82A\xff"}', PushSessionCreateRequest)
    assert req.initialization_id == "\ufffd\ufffdA\ufffd"


def test_lone_surrogate_escape_becomes_replacement_character() -> None:
    body = b'{"initialization_id":"a\\ud800b\\ud83d\\ude00\\\\ud800"}'
    req = decode_request(body, PushSessionCreateRequest)
    assert req.initialization_id == "a\ufffdb\U0001f600\\ud800"


def test_invalid_utf8_outside_strings_is_a_syntax_error() -> None:
    with pytest.raises(DecodeError):
        decode_request(b'{"has_local_pending_rows":\xfftrue}', ConnectRequest)


def test_null_row_element_is_zero_row() -> None:
    req = decode_request(b'{"rows":[null]}', PushSessionChunkRequest)
    assert req.rows[0].op == ""
    assert bytes(req.rows[0].payload) == b""


def test_large_chunk_takes_strict_path_quickly() -> None:
    rows = b",".join([_ROW] * 5000)
    req = decode_request(b'{"start_row_ordinal":0,"rows":[' + rows + b"]}", PushSessionChunkRequest)
    assert len(req.rows) == 5000
    assert bytes(req.rows[-1].payload) == b'{"name": "A <b>", "n": 1.50}'
