"""The exact-integer payload form and the float64 form that every hash is computed over.

Go decodes payload numbers into float64 and so rounds integers beyond +-2^53 (SERVER.md §11.3,
CLIENT.md §12.39, both listed as defects). Payloads keep such integers exact; everything else,
and every ``bundle_hash``, stays byte-identical to Go.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from oversync_sa.wire import (
    BundleRow,
    CanonicalJSONError,
    HashRow,
    bundle_hash,
    bundle_hash_of_received_rows,
    canonical_json,
    canonicalize,
    float64_canonical,
)

BEYOND = 2**53 + 1


@pytest.mark.parametrize(
    ("value", "exact", "go"),
    [
        (BEYOND, "9007199254740993", "9007199254740992"),
        (-BEYOND, "-9007199254740993", "-9007199254740992"),
        (2**63 - 1, "9223372036854775807", "9223372036854776000"),
        (-(2**63) + 1, "-9223372036854775807", "-9223372036854776000"),
        (12345678901234567, "12345678901234567", "12345678901234568"),
        (2**64 + 1, "18446744073709551617", "18446744073709552000"),
        # Exact float64s too: Go prints their shortest digits, which name another integer.
        (-(2**63), "-9223372036854775808", "-9223372036854776000"),
        (2**60, "1152921504606846976", "1152921504606847000"),
        (10**21, "1000000000000000000000", "1e+21"),
        # Within +-2^53 both forms are Go's.
        (2**53, "9007199254740992", "9007199254740992"),
        (-(2**53), "-9007199254740992", "-9007199254740992"),
        (0, "0", "0"),
        (-7, "-7", "-7"),
    ],
)
def test_integer_rendering(value: int, exact: str, go: str) -> None:
    assert canonical_json({"n": value}, exact_integers=True) == f'{{"n":{exact}}}'.encode()
    assert canonical_json({"n": value}) == f'{{"n":{go}}}'.encode()
    text = f'{{"n": {value}}}'
    assert canonicalize(text, exact_integers=True) == f'{{"n":{exact}}}'.encode()
    assert canonicalize(text) == f'{{"n":{go}}}'.encode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Only integer literals are kept: a float literal is a float64 on every side.
        ("9007199254740993.0", "9007199254740992"),
        ("9.007199254740993e15", "9007199254740992"),
        ("12.50", "12.5"),
        ("1e21", "1e+21"),
        ("-0", "-0"),
        ("[-0,9007199254740993]", "[-0,9007199254740993]"),
        ('{"a":[{"b":-9007199254740993}],"s":"<9007199254740993>"}',
         '{"a":[{"b":-9007199254740993}],"s":"\\u003c9007199254740993\\u003e"}'),
    ],
)
def test_exact_form_of_documents(text: str, expected: str) -> None:
    assert canonicalize(text, exact_integers=True) == expected.encode()


def test_exact_form_survives_the_slow_decoder() -> None:
    # Invalid UTF-8 and a bare -0 both take the standard-library path.
    assert canonicalize(b'{"n":9007199254740993,"s":"\xff"}', exact_integers=True) == (
        '{"n":9007199254740993,"s":"\ufffd"}'.encode()
    )
    assert canonicalize(b'[-0,-9007199254740993]', exact_integers=True) == (
        b"[-0,-9007199254740993]"
    )
    assert canonicalize(b'[-0,-9007199254740993]') == b"[-0,-9007199254740992]"


def test_raw_fragments_keep_exact_integers() -> None:
    members = {"n": msgspec.Raw(b"9007199254740993"), "m": msgspec.Raw(b"[18446744073709551617]")}
    assert canonical_json(members, exact_integers=True) == (
        b'{"m":[18446744073709551617],"n":9007199254740993}'
    )


@pytest.mark.parametrize("text", ["1" + "0" * 400, "-1" + "0" * 400, "[1e400]"])
def test_out_of_float64_range_is_still_rejected(text: str) -> None:
    with pytest.raises(CanonicalJSONError):
        canonicalize(text, exact_integers=True)


@pytest.mark.parametrize(
    "text",
    [
        '{"big":9007199254740993,"n":12.5}',
        '{"big":-9223372036854775807,"s":"x"}',
        '{"doc":{"k":[18446744073709551617,1]}}',
        # A long digit run inside a string only costs a re-canonicalisation.
        '{"s":"12345678901234567890"}',
    ],
)
def test_float64_canonical_is_what_go_computes(text: str) -> None:
    exact = canonicalize(text, exact_integers=True)
    assert float64_canonical(exact) == canonicalize(text)


def test_float64_canonical_returns_short_documents_untouched() -> None:
    exact = canonicalize('{"n":900719925474099,"x":1.5}', exact_integers=True)
    assert float64_canonical(exact) is exact


def test_bundle_hash_over_float64_form_matches_a_go_client() -> None:
    """The server stores and sends the exact payload; a Go client hashes its float64 decoding."""
    exact = canonical_json({"id": "k", "big": 2**63 - 1, "n": -BEYOND}, exact_integers=True)
    assert b"9223372036854775807" in exact
    server_digest, server_size = bundle_hash(
        [HashRow("business", "t", {"id": "k"}, "INSERT", 3, float64_canonical(exact))]
    )
    received = BundleRow(schema="business", table="t", key={"id": "k"}, op="INSERT",
                         row_version=3, payload=msgspec.Raw(exact))
    assert bundle_hash_of_received_rows([received]) == (server_digest, server_size)
    # Hashing the exact bytes verbatim would not match any Go client.
    assert bundle_hash([HashRow("business", "t", {"id": "k"}, "INSERT", 3, exact)])[0] != (
        server_digest
    )
    go_text = (
        b'[{"key":{"id":"k"},"op":"INSERT","payload":{"big":9223372036854776000,'
        b'"id":"k","n":-9007199254740992},"row_ordinal":0,"row_version":3,'
        b'"schema":"business","table":"t"}]'
    )
    assert (server_digest, server_size) == (hashlib.sha256(go_text).hexdigest(), len(go_text))


_json: Any = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(_json)
def test_float64_form_of_exact_form_is_go_form(value: Any) -> None:
    exact = canonical_json(value, exact_integers=True)
    assert float64_canonical(exact) == canonical_json(value)
    # The exact form is itself canonical: canonicalising it again changes nothing.
    assert canonicalize(exact, exact_integers=True) == exact
