"""bundle_hash: the §3.5 worked example and the server/client input forms."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from oversync_sa.wire import (
    BundleRow,
    CanonicalJSONError,
    HashRow,
    Op,
    bundle_hash,
    bundle_hash_of_received_rows,
)

_WORKED_TEXT = (
    b'[{"key":{"id":"550e8400-e29b-41d4-a716-446655440000"},"op":"INSERT","payload":'
    b'{"email":"john@example.com","id":"550e8400-e29b-41d4-a716-446655440000","name":"John Doe"},'
    b'"row_ordinal":0,"row_version":143,"schema":"business","table":"users"},'
    b'{"key":{"id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8"},"op":"DELETE","payload":null,'
    b'"row_ordinal":1,"row_version":143,"schema":"business","table":"posts"}]'
)
_WORKED_SHA = "41c5aaddf4f37ca1dcaeff6234792861a3a01bbd22b5facdd090270c4fe6de89"
_USER = "550e8400-e29b-41d4-a716-446655440000"
_POST = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


def _worked_rows(payload: bytes) -> list[HashRow]:
    return [
        HashRow("business", "users", {"id": _USER}, "INSERT", 143, payload),
        HashRow("business", "posts", {"id": _POST}, "DELETE", 143, None),
    ]


def test_worked_example_text_is_what_the_spec_states() -> None:
    assert len(_WORKED_TEXT) == 393
    assert hashlib.sha256(_WORKED_TEXT).hexdigest() == _WORKED_SHA


def test_worked_example_from_canonical_payloads() -> None:
    payload = b'{"email":"john@example.com","id":"' + _USER.encode() + b'","name":"John Doe"}'
    assert bundle_hash(_worked_rows(payload)) == (_WORKED_SHA, 393)


def test_worked_example_from_non_canonical_payloads() -> None:
    payload = b'{"id": "' + _USER.encode() + b'", "name": "John Doe", "email": "john@example.com"}'
    assert bundle_hash(_worked_rows(payload), payloads_canonical=False) == (_WORKED_SHA, 393)
    # Trusting non-canonical bytes hashes them verbatim, which gives a different hash.
    assert bundle_hash(_worked_rows(payload))[0] != _WORKED_SHA


def test_worked_example_from_received_rows() -> None:
    rows = [
        BundleRow(schema="business", table="users", key={"id": _USER}, op=Op.INSERT,
                  row_version=143, payload=msgspec.Raw(
                      b'{"name":"John Doe","email":"john@example.com","id":"' + _USER.encode()
                      + b'"}')),
        BundleRow(schema="business", table="posts", key={"id": _POST}, op=Op.DELETE,
                  row_version=143),
    ]
    assert bundle_hash_of_received_rows(rows) == (_WORKED_SHA, 393)


def test_delete_payload_always_hashes_as_null() -> None:
    rows = _worked_rows(b'{"email":"john@example.com","id":"' + _USER.encode()
                        + b'","name":"John Doe"}')
    rows[1] = rows[1]._replace(payload=b'{"id":"x"}')
    assert bundle_hash(rows) == (_WORKED_SHA, 393)


def test_empty_bundle_hashes_empty_array() -> None:
    assert bundle_hash([]) == (hashlib.sha256(b"[]").hexdigest(), 2)


def test_strings_keys_and_versions_use_go_encoding() -> None:
    row = HashRow("a<b", "t&", {"k\u2028": "v>"}, "UPDATE", 2**53 + 1, b"{}")
    expected = (
        b'[{"key":{"k\\u2028":"v\\u003e"},"op":"UPDATE","payload":{},"row_ordinal":5,'
        b'"row_version":9007199254740992,"schema":"a\\u003cb","table":"t\\u0026"}]'
    )
    assert bundle_hash([row], first_ordinal=5) == (hashlib.sha256(expected).hexdigest(),
                                                    len(expected))


def test_multi_member_key_is_canonicalised() -> None:
    row = HashRow("s", "t", {"b": "2", "a": "1"}, "INSERT", 1, b"{}")
    expected = (b'[{"key":{"a":"1","b":"2"},"op":"INSERT","payload":{},"row_ordinal":0,'
                b'"row_version":1,"schema":"s","table":"t"}]')
    assert bundle_hash([row])[0] == hashlib.sha256(expected).hexdigest()


def test_invalid_received_payload_is_rejected() -> None:
    rows = _worked_rows(b"{not json")
    with pytest.raises(CanonicalJSONError):
        bundle_hash(rows, payloads_canonical=False)
