"""Go-compatible canonical JSON (SERVER.md Appendix A, CLIENT.md §5.3).

Bundle hashes, captured payloads and payload equality all depend on reproducing the bytes Go's
``encoding/json`` writes after decoding a document into generic values, so this module mirrors
Go, not RFC 8785: every number is a float64, keys are sorted by code point, strings are
HTML-escaped, and invalid UTF-8 or lone surrogates become U+FFFD.

Speed matters because the server canonicalises every captured payload. The fast path decodes with
msgspec, swaps numbers for pre-rendered :class:`msgspec.Raw` fragments, lets msgspec write the
sorted document in C and finally applies the five escapes Go adds. Inputs msgspec cannot take
(invalid UTF-8, lone surrogate escapes) or would misread (a bare ``-0`` integer) fall back to
the standard library decoder with Go's replacement rules.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final, NoReturn

import msgspec

from oversync_sa.wire.errors import CanonicalJSONError

__all__ = [
    "canonical_json",
    "canonical_string",
    "canonicalize",
    "float64_canonical",
    "format_number",
]

# Integers in this range print identically as Python ints and as Go float64s.
_EXACT_INT_LIMIT: Final = 2**53

# Go escapes these inside strings; msgspec already escapes everything else exactly like Go, and
# none of these bytes can occur outside a string in msgspec's output, so a blanket replace is safe.
_GO_EXTRA_ESCAPES: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)
_NEEDS_EXTRA_ESCAPE: Final = re.compile(rb"[<>&]|\xe2\x80[\xa8\xa9]")

# A bare integer ``-0`` is a float64 negative zero for Go, but msgspec yields the int 0.
_BARE_NEGATIVE_ZERO: Final = re.compile(rb"-0(?![0-9.eE])")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")

_ERROR_HANDLER: Final = "oversync_sa.go_per_byte_replace"

_encode: Final = msgspec.json.Encoder(order="sorted").encode
_decode: Final = msgspec.json.Decoder().decode
_Raw: Final = msgspec.Raw


def _replace_one_byte(exc: UnicodeError) -> tuple[str, int]:
    # Go's UTF-8 decoder consumes one byte per invalid sequence, so each bad byte gets its own
    # U+FFFD; Python's built-in "replace" would merge a truncated multi-byte sequence into one.
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "\ufffd", exc.start + 1


codecs.register_error(_ERROR_HANDLER, _replace_one_byte)


def _fail(message: str, cause: BaseException | None = None) -> NoReturn:
    raise CanonicalJSONError(message) from cause


def _format_float(x: float) -> str:
    if x != x or x in (math.inf, -math.inf):
        _fail(f"number {x!r} is outside the JSON float64 range")
    if x == 0.0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    magnitude = -x if x < 0 else x
    text = repr(x)
    if 1e-4 <= magnitude < 1e16:
        # repr() is plain fixed-point in this range, with at most a trailing ".0" to drop.
        return text[:-2] if text.endswith(".0") else text
    return _format_float_slow(x, magnitude, text)


def _format_float_slow(x: float, magnitude: float, text: str) -> str:
    sign = "-" if x < 0 else ""
    mantissa, _, exp_text = text.lstrip("-").partition("e")
    whole, _, frac = mantissa.partition(".")
    if frac == "0":
        frac = ""
    # repr() gives the shortest round-trip digits; re-place the decimal point per Go's rules.
    digits = (whole + frac).lstrip("0")
    leading_zeros = len(whole + frac) - len(digits)
    point = len(whole) + (int(exp_text) if exp_text else 0) - leading_zeros
    digits = digits.rstrip("0")
    if magnitude < 1e-6 or magnitude >= 1e21:
        exponent = point - 1
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{body}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


_ZERO: Final = _Raw(b"0")
_NEGATIVE_ZERO: Final = _Raw(b"-0")


def _float_raw(x: float) -> msgspec.Raw:
    if x == 0.0:
        # 0.0 and -0.0 are equal dict keys, so they must not share a cache entry.
        return _NEGATIVE_ZERO if math.copysign(1.0, x) < 0 else _ZERO
    return _cached_float_raw(x)


@lru_cache(maxsize=4096)
def _cached_float_raw(x: float) -> msgspec.Raw:
    return _Raw(_format_float(x).encode("ascii"))


def _int_raw(value: int, exact: bool = False) -> msgspec.Raw:
    try:
        as_float = float(value)
    except OverflowError as exc:
        _fail("integer is outside the JSON float64 range", exc)
    if exact:
        # Go's shortest float rendering is not the integer's digits beyond 2^53 even when the
        # float64 is exact (2^60 prints as 1152921504606847000), so digits it is.
        return _Raw(str(value).encode("ascii"))
    return _float_raw(as_float)


def format_number(value: float | int) -> str:
    """Render a number exactly as Go prints the float64 it converts to (``1e+21``, ``-0``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if -_EXACT_INT_LIMIT <= value <= _EXACT_INT_LIMIT:
            return str(int(value))
        try:
            value = float(value)
        except OverflowError as exc:
            _fail("integer is outside the JSON float64 range", exc)
    return _format_float(float(value))


def _prepare(value: Any, exact: bool = False) -> Any:
    """Return ``value`` with numbers replaced by their Go rendering, ready for msgspec.

    ``exact`` keeps integers that float64 cannot represent as their exact digits.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is dict:
        return {
            key: (item if type(item) is str else _prepare(item, exact))
            for key, item in value.items()
        }
    if kind is list:
        return [item if type(item) is str else _prepare(item, exact) for item in value]
    if kind is float:
        return _float_raw(value)
    if kind is int:
        return value if -_EXACT_INT_LIMIT <= value <= _EXACT_INT_LIMIT else _int_raw(value, exact)
    return _prepare_other(value, exact)


def _prepare_other(value: Any, exact: bool) -> Any:
    # Uncommon shapes accepted from Python callers: subclasses, other mappings and sequences,
    # and embedded raw JSON (e.g. a payload received from the wire).
    if isinstance(value, msgspec.Raw):
        return _prepare(_decode_text(bytes(value), exact), exact)
    if isinstance(value, int):
        return _prepare(int(value), exact)
    if isinstance(value, float):
        return _float_raw(float(value))
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                _fail(f"object keys must be strings, not {type(key).__name__}")
            out[str(key)] = _prepare(item, exact)
        return out
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray | memoryview):
        return [_prepare(item, exact) for item in value]
    _fail(f"{type(value).__name__} is not a JSON value")


def _scrub_surrogates(value: Any) -> Any:
    """Replace lone surrogates (unencodable in UTF-8) with U+FFFD, as Go does when decoding."""
    kind = type(value)
    if kind is str:
        return _SURROGATE.sub("\ufffd", value)
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            # Replacement can merge keys; like Go, the later member wins.
            out[_SURROGATE.sub("\ufffd", key)] = _scrub_surrogates(item)
        return out
    if kind is list:
        return [_scrub_surrogates(item) for item in value]
    return value


def _encode_prepared(prepared: Any) -> bytes:
    try:
        out = _encode(prepared)
    except UnicodeEncodeError:
        out = _encode(_scrub_surrogates(prepared))
    except (TypeError, msgspec.EncodeError) as exc:
        _fail(f"value is not JSON-encodable: {exc}", exc)
    if _NEEDS_EXTRA_ESCAPE.search(out) is not None:
        for raw, escaped in _GO_EXTRA_ESCAPES:
            out = out.replace(raw, escaped)
    return out


def canonical_json(value: Any, *, exact_integers: bool = False) -> bytes:
    """Go-canonical bytes of an already decoded JSON value.

    Accepts ``dict``/``Mapping`` (string keys), ``list``/``tuple``, ``str``, ``int``, ``float``,
    ``bool``, ``None`` and :class:`msgspec.Raw` (canonicalised as JSON text). Integers are
    converted to float64 first, exactly like a Go round trip; infinities, NaN and non-JSON values
    raise :class:`CanonicalJSONError`.

    ``exact_integers=True`` is the *payload* form: an integer beyond +-2^53 keeps its exact
    digits instead of Go's float64 rendering; everything else is byte-identical to Go. Hashes
    must never be computed over it - use :func:`float64_canonical`.
    """
    return _encode_prepared(_prepare(value, exact_integers))


def canonical_string(text: str) -> bytes:
    """Go's JSON rendering of one string, quotes included (``"a\\u003cb"``)."""
    return _encode_prepared(text)


def _reject_constant(name: str) -> NoReturn:
    _fail(f"{name} is not valid JSON")


def _pairs_last_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in pairs:
        # Scrubbing here, in document order, keeps "last member wins" exact when two different
        # lone surrogates collapse into the same U+FFFD key.
        out[_SURROGATE.sub("\ufffd", key)] = item
    return out


_stdlib_decoder: Final = json.JSONDecoder(
    parse_int=float,  # float("-0") keeps the sign that int("-0") would lose
    parse_constant=_reject_constant,
    object_pairs_hook=_pairs_last_wins,
)
_stdlib_decode: Final[Callable[[str], Any]] = _stdlib_decoder.decode


def _exact_int(text: str) -> int | float:
    # A bare -0 must stay a float64 negative zero, as in Go; other integers stay exact.
    return -0.0 if text == "-0" else int(text)


_stdlib_exact_decode: Final[Callable[[str], Any]] = json.JSONDecoder(
    parse_int=_exact_int,
    parse_constant=_reject_constant,
    object_pairs_hook=_pairs_last_wins,
).decode


def _decode_text_slow(data: bytes, exact: bool = False) -> Any:
    text = data.decode("utf-8", _ERROR_HANDLER)
    try:
        value = (_stdlib_exact_decode if exact else _stdlib_decode)(text)
    except CanonicalJSONError:
        raise
    except (ValueError, RecursionError) as exc:
        _fail(f"invalid JSON: {exc}", exc)
    return _scrub_surrogates(value)


def _decode_text(data: bytes, exact: bool = False) -> Any:
    if _BARE_NEGATIVE_ZERO.search(data) is not None:
        return _decode_text_slow(data, exact)
    try:
        return _decode(data)
    except msgspec.ValidationError as exc:  # msgspec reports float64 overflow this way
        _fail(f"invalid JSON: {exc}", exc)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return _decode_text_slow(data, exact)


def canonicalize(
    text: bytes | bytearray | memoryview | str, *, exact_integers: bool = False
) -> bytes:
    """Decode JSON text the way Go does and return its Go-canonical bytes.

    Numbers become float64 (``9007199254740993`` -> ``9007199254740992``, ``12.50`` -> ``12.5``),
    invalid UTF-8 bytes and lone surrogate escapes become U+FFFD, duplicate keys keep the last
    value. Malformed JSON, ``NaN``/``Infinity`` and out-of-range numbers raise
    :class:`CanonicalJSONError`. ``exact_integers`` keeps the digits of integer literals
    beyond +-2^53 (see :func:`canonical_json`).
    """
    return _encode_prepared(_prepare(_decode_text(_as_bytes(text), exact_integers),
                                     exact_integers))


# Any integer beyond 2^53 (about 9.007e15) has at least 16 digits; without such a run the
# exact-integer form and Go's form of a document are the same bytes.
_LONG_DIGIT_RUN: Final = re.compile(rb"[0-9]{16}")


def float64_canonical(text: bytes) -> bytes:
    """Go's canonical bytes of a canonical document, e.g. one made with ``exact_integers``.

    What a Go peer computes after decoding the document into float64s, so the input of every
    ``bundle_hash``. Returns ``text`` itself when it cannot hold an integer beyond 2^53.
    """
    if _LONG_DIGIT_RUN.search(text) is None:
        return text
    return canonicalize(text)


def _as_bytes(text: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(text, str):
        # A Python str can hold lone surrogates no UTF-8 text can; each stands for one U+FFFD.
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")
    return bytes(text)
