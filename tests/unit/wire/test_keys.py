"""Sync key codecs and the op enum (SERVER.md §1.1, §5.2)."""

from __future__ import annotations

import uuid

import pytest

from oversync_sa.wire import KeyKind, Op, WireFormatError, is_canonical_uuid, key_bytes, key_text

_U = "550e8400-e29b-41d4-a716-446655440000"


def test_codes() -> None:
    assert (KeyKind.UUID, KeyKind.TEXT) == (1, 2)
    assert [(op.value, op.code) for op in Op] == [("INSERT", 1), ("UPDATE", 2), ("DELETE", 3)]
    assert [Op.from_code(c) for c in (1, 2, 3)] == [Op.INSERT, Op.UPDATE, Op.DELETE]
    assert Op.DELETE == "DELETE"


def test_unknown_op_code() -> None:
    with pytest.raises(WireFormatError, match="op code"):
        Op.from_code(4)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (_U, True),
        (_U.upper(), False),
        ("{" + _U + "}", False),
        (_U.replace("-", ""), False),
        ("urn:uuid:" + _U, False),
        (" " + _U, False),
        (_U[:-1] + "g", False),
        (_U + "\n", False),
        ("", False),
    ],
)
def test_is_canonical_uuid(text: str, ok: bool) -> None:
    assert is_canonical_uuid(text) is ok


def test_uuid_key_round_trip() -> None:
    raw = key_bytes(KeyKind.UUID, _U)
    assert raw == bytes.fromhex(_U.replace("-", ""))
    assert key_text(KeyKind.UUID, raw) == _U


def test_uuid_key_must_be_canonical() -> None:
    with pytest.raises(WireFormatError, match="canonical"):
        key_bytes(KeyKind.UUID, _U.upper())


@pytest.mark.parametrize("raw", [b"", b"\x00" * 15, b"\x00" * 17])
def test_stored_uuid_must_have_16_bytes(raw: bytes) -> None:
    with pytest.raises(WireFormatError, match="16"):
        key_text(KeyKind.UUID, raw)


def test_uuid_text_is_lowercase() -> None:
    value = uuid.UUID("ABCDEF00-0000-4000-8000-0000000000FF")
    assert key_text(KeyKind.UUID, value.bytes) == "abcdef00-0000-4000-8000-0000000000ff"


@pytest.mark.parametrize("text", ["", "héllo 😀", "UPPER", _U.upper()])
def test_text_key_round_trip(text: str) -> None:
    raw = key_bytes(KeyKind.TEXT, text)
    assert raw == text.encode("utf-8")
    assert key_text(KeyKind.TEXT, raw) == text


def test_stored_text_key_must_be_utf8() -> None:
    with pytest.raises(WireFormatError, match="UTF-8"):
        key_text(KeyKind.TEXT, b"\xff")
