"""Go-compatible canonical JSON: Go's own vectors, the spec's check values and edge cases."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from oversync_sa.wire import (
    BundleRow,
    CanonicalJSONError,
    bundle_hash_of_received_rows,
    canonical_json,
    canonical_string,
    canonicalize,
    format_number,
)

from ._reference import ref_canonicalize, ref_decode_per_byte, ref_encode, ref_number

_VECTORS_PATH = Path(__file__).parents[2] / "fixtures" / "go_canonical_json.jsonl"
_VECTORS = [json.loads(line) for line in _VECTORS_PATH.read_text("utf-8").splitlines() if line]
_DOCS = [v for v in _VECTORS if v["kind"] == "doc"]
_BUNDLES = [v for v in _VECTORS if v["kind"] == "bundle"]


def test_vector_file_has_both_kinds() -> None:
    assert len(_DOCS) >= 40
    assert len(_BUNDLES) >= 3


@pytest.mark.parametrize("vector", _DOCS, ids=[v["name"] for v in _DOCS])
def test_go_doc_vector(vector: dict[str, Any]) -> None:
    out = canonicalize(vector["input"].encode("utf-8"))
    assert out == vector["go_canonical"].encode("utf-8")
    assert hashlib.sha256(out).hexdigest() == vector["sha256"]
    assert len(out) == vector["byte_count"]


@pytest.mark.parametrize("vector", _DOCS, ids=[v["name"] for v in _DOCS])
def test_go_doc_vector_from_str_input(vector: dict[str, Any]) -> None:
    assert canonicalize(vector["input"]) == vector["go_canonical"].encode("utf-8")


@pytest.mark.parametrize("vector", _BUNDLES, ids=[v["name"] for v in _BUNDLES])
def test_go_bundle_vector(vector: dict[str, Any]) -> None:
    rows = msgspec.json.decode(vector["input"].encode("utf-8"), type=list[BundleRow])
    digest, size = bundle_hash_of_received_rows(rows)
    expected = vector["go_canonical"].encode("utf-8")
    assert (digest, size) == (hashlib.sha256(expected).hexdigest(), len(expected))
    assert (digest, size) == (vector["sha256"], vector["byte_count"])


def test_appendix_a_check_value() -> None:
    text = '{"b":9007199254740993,"n":12.50,"s":"x<y & \\"q\\"","e":1e21,"t":1e-7}'
    assert canonicalize(text) == (
        b'{"b":9007199254740992,"e":1e+21,"n":12.5,"s":"x\\u003cy \\u0026 \\"q\\"","t":1e-7}'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e21", "1e+21"),
        ("1e20", "100000000000000000000"),
        ("1e-7", "1e-7"),
        ("0.000001", "0.000001"),
        ("-0", "-0"),
        ("[-0]", "[-0]"),
        ('{"a":-0,"b":"x-0"}', '{"a":-0,"b":"x-0"}'),
        ("-0.0", "-0"),
        ("0", "0"),
        ("12.50", "12.5"),
        ("9007199254740993", "9007199254740992"),
        ("-9007199254740993", "-9007199254740992"),
        ("12345678901234567890", "12345678901234567000"),
        ("1E+2", "100"),
        ("5e-324", "5e-324"),
        ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ("0.0001", "0.0001"),
        ("1e16", "10000000000000000"),
    ],
)
def test_numbers(text: str, expected: str) -> None:
    assert canonicalize(text) == expected.encode()


@pytest.mark.parametrize(
    "text", ["1e400", "-1e400", "[1e309]", "1" + "0" * 400, "NaN", "Infinity", "-Infinity",
             "[NaN]", '{"a":Infinity}', "", "{", "[1,]", "01", "1 2", '{"a" 1}', "'a'",
             '"\x01"', '"\n"']
)
def test_invalid_json_is_rejected(text: str) -> None:
    with pytest.raises(CanonicalJSONError):
        canonicalize(text)


def test_invalid_json_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="JSON"):
        canonicalize(b"{nope}")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Go replaces each byte of an invalid sequence: truncated E2 82 gives two U+FFFD.
        (b'"\xe2\x82A"', '"\ufffd\ufffdA"'),
        (b'"\xff"', '"\ufffd"'),
        (b'"\xc3"', '"\ufffd"'),
        # An encoded surrogate (CESU) is three invalid bytes.
        (b'"\xed\xa0\x80"', '"\ufffd\ufffd\ufffd"'),
        (b'{"\xff":1,"k":"\xfe<"}', '{"k":"\ufffd\\u003c","\ufffd":1}'),
        (b'"\\ud800x"', '"\ufffdx"'),
        (b'"\\udc00"', '"\ufffd"'),
        (b'"\\ud800\\ud800"', '"\ufffd\ufffd"'),
        (b'"\\ud83d\\ude00"', '"\U0001f600"'),
        # Both keys become U+FFFD; the later member wins, as in Go.
        (b'{"\\ud800":1,"\\udfff":2,"\\ud800":3}', '{"\ufffd":3}'),
    ],
)
def test_invalid_unicode_becomes_replacement_char(raw: bytes, expected: str) -> None:
    assert canonicalize(raw) == expected.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("\x00\x1f\x7f", '"\\u0000\\u001f\x7f"'),
        ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
        ("<>&", '"\\u003c\\u003e\\u0026"'),
        ("\u2028\u2029", '"\\u2028\\u2029"'),
        ('"\\/', '"\\"\\\\/"'),
        ("\U0001f600é", '"\U0001f600é"'),
        ("\ud800", '"\ufffd"'),
    ],
)
def test_strings(value: str, expected: str) -> None:
    assert canonical_string(value) == expected.encode("utf-8")
    assert canonical_json([value]) == b"[" + expected.encode("utf-8") + b"]"


def test_keys_sort_by_code_point_not_utf16() -> None:
    # RFC 8785 would put U+1F600 before U+FFFF (UTF-16 order); Go sorts by code point.
    assert canonical_json({"\U0001f600": 1, "\uffff": 2, "z": 3}) == (
        '{"z":3,"\uffff":2,"\U0001f600":1}'.encode()
    )


def test_canonical_json_accepts_python_shapes() -> None:
    class Flag(int):
        pass

    value = {"t": (1, 2.0), "m": {"x": True}, "r": msgspec.Raw(b'{"b":1.50,"a":null}'),
             "f": Flag(3)}
    assert canonical_json(value) == b'{"f":3,"m":{"x":true},"r":{"a":null,"b":1.5},"t":[1,2]}'


@pytest.mark.parametrize(
    "value", [{1: "a"}, {"a": b"bytes"}, {"a": object()}, math.nan, [math.inf], 10**400]
)
def test_canonical_json_rejects_non_json(value: Any) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_json(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "0"), (2**53, "9007199254740992"), (2**53 + 1, "9007199254740992"), (-0.0, "-0"),
     (1e21, "1e+21"), (123.0, "123"), (True, "1")],
)
def test_format_number(value: float, expected: str) -> None:
    assert format_number(value) == expected


# --------------------------------------------------------------------- property tests

_TRICKY_CHARS = st.sampled_from(["<", ">", "&", "\u2028", "\u2029", "\x00", "\x1f", "\x7f", '"',
                                 "\\", "/", "\U0001f600", "\uffff", "é", "\ud800", "\udfff"])
_TEXT = st.text(st.one_of(st.characters(), _TRICKY_CHARS), max_size=12)
_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e21, 1e20, 1e-6, 1e-7, 9.999999999999999e20, 0.000001, -0.0, 5e-324,
                     2.0**53, 2.0**53 + 2, 1.7976931348623157e308, 123456789.125]),
)
_INTS = st.one_of(st.integers(min_value=-(2**60), max_value=2**60),
                  st.integers(min_value=-(10**300), max_value=10**300))
_LEAVES = st.one_of(st.none(), st.booleans(), _INTS, _FLOATS, _TEXT)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_TEXT, inner, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_fast_encoder_matches_reference(value: Any) -> None:
    assert canonical_json(value) == ref_encode(value)


@settings(max_examples=300, deadline=None)
@given(_VALUES, st.booleans())
def test_canonicalize_matches_reference_on_text(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    data = text.encode("utf-8", "surrogatepass") if ascii_only else text.encode("utf-8", "replace")
    if not ascii_only and any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return  # a raw lone surrogate has no UTF-8 text form; covered by the escaped variant
    assert canonicalize(data) == ref_canonicalize(text)


@settings(max_examples=300, deadline=None)
@given(_FLOATS)
def test_number_formatting_matches_reference(x: float) -> None:
    assert format_number(x) == ref_number(x)
    assert canonicalize(repr(x)) == ref_number(x).encode()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=12))
def test_arbitrary_bytes_in_strings_are_replaced_per_byte(raw: bytes) -> None:
    doc = b'"' + raw.replace(b"\\", b"").replace(b'"', b"") + b'"'
    try:
        out = canonicalize(doc)
    except CanonicalJSONError:
        # Only raw control characters may make the string invalid JSON.
        assert any(b < 0x20 for b in doc)
        return
    # Go decodes per byte: every invalid byte is one U+FFFD, valid runs stay as they are.
    expected = ref_decode_per_byte(doc[1:-1])
    assert out == ref_encode(expected)
    assert out.decode("utf-8")  # always valid UTF-8


def test_shortest_digits_tie_rounds_half_to_even() -> None:
    # 562949953421312.75 is exactly halfway between the two shortest candidates; Go's
    # roundShortest (like CPython's repr) rounds half to even.
    assert format_number(562949953421312.8) == "562949953421312.8"
    assert ref_number(562949953421312.8) == "562949953421312.8"
