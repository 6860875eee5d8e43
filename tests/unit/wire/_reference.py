"""A deliberately simple Go-canonical JSON encoder used as the oracle for the fast one.

It shares no code with ``oversync_sa.wire.canonical``: numbers are found by searching for the
shortest round-tripping precision instead of trusting ``repr``, strings are escaped one code
point at a time from the Appendix A table.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                  "\t": "\\t"}
_GO_HTML = {"<", ">", "&", "\u2028", "\u2029"}


def ref_number(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        raise ValueError("out of range")
    if x == 0:
        return "-0" if math.copysign(1, x) < 0 else "0"
    # Shortest digit string that parses back to x; among equally short ones, the closest, and on
    # an exact tie the one with an even last digit (Go's roundShortest rounds half to even).
    exact = Decimal(abs(x))
    for precision in range(1, 18):
        rounded = Decimal(f"{abs(x):.{precision - 1}e}")
        ulp = Decimal(1).scaleb(rounded.adjusted() - (precision - 1))
        fits = [d for d in (rounded - ulp, rounded, rounded + ulp) if d > 0 and float(d) == abs(x)]
        if fits:
            best = min(fits, key=lambda d: (abs(d - exact), d.as_tuple().digits[-1] % 2))
            break
    digits = "".join(map(str, best.as_tuple().digits)).rstrip("0") or "0"
    exponent = best.adjusted()
    sign = "-" if x < 0 else ""
    if abs(x) < 1e-6 or abs(x) >= 1e21:
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{body}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"
    point = exponent + 1  # digits before the decimal point
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def ref_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            ch = "\ufffd"
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20 or ch in _GO_HTML:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def ref_encode(v: Any) -> bytes:
    return _enc(v).encode("utf-8")


def _enc(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return ref_string(v)
    if isinstance(v, int | float):
        return ref_number(float(v))
    if isinstance(v, list):
        return "[" + ",".join(_enc(i) for i in v) + "]"
    if isinstance(v, dict):
        merged: dict[str, Any] = {}
        for k, item in v.items():
            merged[k.translate(_FFFD)] = item
        return "{" + ",".join(ref_string(k) + ":" + _enc(merged[k]) for k in sorted(merged)) + "}"
    raise TypeError(type(v))


_FFFD = {c: "\ufffd" for c in range(0xD800, 0xE000)}


def ref_canonicalize(text: str) -> bytes:
    def reject(name: str) -> Any:
        raise ValueError(name)

    return ref_encode(json.loads(text, parse_int=float, parse_constant=reject))


def ref_decode_per_byte(raw: bytes) -> str:
    """Decode UTF-8 like Go: a byte that does not start a valid sequence becomes one U+FFFD."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        for size in (1, 2, 3, 4):
            try:
                ch = raw[i : i + size].decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.append(ch)
            i += size
            break
        else:
            out.append("\ufffd")
            i += 1
    return "".join(out)
