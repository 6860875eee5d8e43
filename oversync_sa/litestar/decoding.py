"""Request-body decoding with the semantics of Go's ``encoding/json`` (SERVER.md §11.26).

Go clients and the Go server agree on a decoder that is lenient in ways msgspec is not: member
names match case-insensitively, unknown members are ignored, ``null`` leaves a field at its zero
value, a missing member is its zero value, and a streaming decode stops after the first JSON
value. It is also strict where Python's ``json`` is lenient: integers must be JSON integers within
int64 and ``NaN``/``Infinity`` are not JSON.

Push chunks carry thousands of rows, so the common case must stay fast. :func:`decode_request`
first decodes with a *strict mirror* of the target type (every struct forbids unknown members,
every ``int`` is bounded to int64). A body that a well-behaved client sends - exact member names,
no nulls, no trailing bytes - passes in one msgspec pass. Anything else falls back to a slower
normaliser that applies the Go rules member by member and never changes a strict-path result.
"""

from __future__ import annotations

import codecs
import enum
import json
import re
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any, Literal, TypeVar

import msgspec

__all__ = ["DecodeError", "decode_request"]

_T = TypeVar("_T", bound=msgspec.Struct)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_Int64 = typing.Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)]

# JSON's own whitespace; str.strip() without arguments would also drop e.g. U+00A0.
_JSON_WS = " \t\n\r"
# Escaped backslashes are matched too so that `\\ud800` (a literal backslash) is left alone.
_SURROGATE_ESCAPE = re.compile(
    r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)


class DecodeError(ValueError):
    """The body is not a valid request; ``str(err)`` is a human message for logs and bodies.

    The caller maps it to its endpoint's code (``invalid_request`` for connect and push,
    ``snapshot_session_invalid`` for snapshot create).
    """


def decode_request(
    body: bytes,
    target_type: type[_T],
    *,
    trailing: Literal["ignore", "reject"] = "ignore",
    unknown: Literal["ignore", "reject"] = "ignore",
    allow_empty: bool = False,
) -> _T:
    """Decode ``body`` into ``target_type`` the way Go's ``json.Decoder.Decode`` would.

    ``trailing="ignore"`` reads one JSON value and ignores whatever follows it (connect, push
    create, push chunk); ``"reject"`` allows only whitespace after it (snapshot create: Go
    reads a second value there, and treating any leftover as an error is the intended rule).
    ``unknown="reject"`` fails on members that match no field, at any depth. An empty (or
    all-whitespace) body is an error unless ``allow_empty`` is set, in which case it decodes to
    the zero request, as a top-level ``null`` always does.
    """
    try:
        try:
            mirrored = _strict_decoder(target_type).decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            # Any miss, however it is reported, goes to the path that knows Go's rules.
            pass
        else:
            return msgspec.convert(mirrored, target_type, from_attributes=True)
        return _decode_lenient(body, target_type, trailing=trailing, unknown=unknown,
                               allow_empty=allow_empty)
    except RecursionError:
        # Nesting deeper than the interpreter's stack: a body no client sends, and which must
        # be the endpoint's 400, not a 500 (Go refuses beyond 10000 levels; the limit here is
        # lower, and every payload a sync table can hold is far below it).
        raise DecodeError("JSON nesting is too deep") from None


# --------------------------------------------------------------------------- strict fast path


@cache
def _strict_decoder(target_type: type[msgspec.Struct]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(_mirror(target_type))


def _mirror(tp: Any) -> Any:
    """The same type with every struct forbidding unknown members and ints bounded to int64."""
    if tp is int:
        return _Int64
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _mirror_struct(tp)
    origin = typing.get_origin(tp)
    if origin is None:
        return tp
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return typing.Annotated[(_mirror(args[0]), *tp.__metadata__)]
    if origin is Literal:
        return tp
    mirrored = tuple(_mirror(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[mirrored]  # noqa: UP007 - built from a runtime tuple
    return origin[mirrored if len(mirrored) > 1 else mirrored[0]]


@cache
def _mirror_struct(cls: type[msgspec.Struct]) -> Any:
    fields: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    for f in msgspec.structs.fields(cls):
        if f.default is not msgspec.NODEFAULT:
            default: Any = f.default
        elif f.default_factory is not msgspec.NODEFAULT:
            default = msgspec.field(default_factory=f.default_factory)
        else:
            default = msgspec.NODEFAULT
        fields.append((f.name, _mirror(f.type), default))
        rename[f.name] = f.encode_name
    return msgspec.defstruct(
        f"_Strict{cls.__name__}",
        [(n, t) if d is msgspec.NODEFAULT else (n, t, d) for n, t, d in fields],
        kw_only=True,
        forbid_unknown_fields=True,
        rename=rename,
    )


# --------------------------------------------------------------------------- lenient fallback


def _decode_lenient(
    body: bytes,
    target_type: type[_T],
    *,
    trailing: Literal["ignore", "reject"],
    unknown: Literal["ignore", "reject"],
    allow_empty: bool,
) -> _T:
    text = _repair_utf8(body)
    start = len(text) - len(text.lstrip(_JSON_WS))
    if start == len(text):
        if allow_empty:
            return _convert(_zero(target_type), target_type)
        raise DecodeError("request body is empty")
    try:
        _, end = _SYNTAX.raw_decode(text, start)
    except ValueError as exc:
        raise DecodeError(f"request body is not valid JSON: {exc}") from None
    if trailing == "reject" and text[end:].strip(_JSON_WS):
        raise DecodeError("request body has data after the JSON value")
    value = _repair_surrogate_escapes(text[start:end]).encode()
    tree = _normalise(value, target_type, "$", reject_unknown=unknown == "reject")
    return _convert(_zero(target_type) if tree is None else tree, target_type)


def _convert(tree: Any, target_type: type[_T]) -> _T:
    try:
        return msgspec.convert(tree, target_type, strict=True)
    except msgspec.ValidationError as exc:
        raise DecodeError(str(exc)) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Only for syntax checking and locating the end of the first value; Python's json accepts
# NaN/Infinity unless parse_constant refuses them.
_SYNTAX = json.JSONDecoder(parse_constant=_reject_constant)
_SCALAR: Callable[[str], Any] = json.JSONDecoder(parse_constant=_reject_constant).decode


def _repair_utf8(body: bytes) -> str:
    """Decode UTF-8, replacing each invalid byte with U+FFFD as Go does (not maximal subparts)."""
    try:
        return body.decode()
    except UnicodeDecodeError:
        return body.decode("utf-8", "oversync-go-replace")


def _repair_surrogate_escapes(text: str) -> str:
    """Replace lone UTF-16 surrogate escapes with ``\\ufffd``, as Go's decoder does.

    msgspec refuses lone surrogates even inside values it only skips, so they are repaired
    in the JSON text before any part is decoded.
    """
    if "\\u" not in text:
        return text
    return _SURROGATE_ESCAPE.sub(_surrogate_replacement, text)


def _surrogate_replacement(match: re.Match[str]) -> str:
    token = match.group()
    return token if len(token) != 6 else "\\ufffd"


def _go_replace(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "\ufffd", exc.start + 1


codecs.register_error("oversync-go-replace", _go_replace)


def _normalise(raw: bytes, tp: Any, path: str, *, reject_unknown: bool) -> Any:
    """Turn one JSON value into builtins that ``msgspec.convert`` accepts for ``tp``.

    Returns ``None`` for a JSON ``null`` that should leave the field at its default; callers drop
    such members so the default (or the zero value) applies.
    """
    tp = _unwrap(tp)
    if _accepts_raw(tp):
        return msgspec.Raw(raw)
    if raw == b"null":
        return None
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a not in (type(None), msgspec.UnsetType)]
        tp = _unwrap(options[0]) if len(options) == 1 else Any
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _normalise_struct(raw, tp, path, reject_unknown=reject_unknown)
    origin = typing.get_origin(tp)
    if origin in (list, tuple, set, frozenset):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = _decode_part(raw, list[msgspec.Raw], path)
        return [
            _member(item, item_tp, f"{path}[{i}]", reject_unknown)
            for i, item in enumerate(items)
        ]
    if origin is dict:
        _, value_tp = typing.get_args(tp) or (str, Any)
        members = _decode_part(raw, dict[str, msgspec.Raw], path)
        return {
            k: _member(v, value_tp, f"{path}.{k}", reject_unknown) for k, v in members.items()
        }
    return _scalar(raw, tp, path)


def _normalise_struct(
    raw: bytes, cls: type[msgspec.Struct], path: str, *, reject_unknown: bool
) -> dict[str, Any]:
    members = _decode_part(raw, dict[str, msgspec.Raw], path)
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    folded = {name.lower(): name for name in reversed(list(fields))}
    out: dict[str, Any] = {}
    for key, value in members.items():
        name = key if key in fields else folded.get(key.lower())
        if name is None:
            if reject_unknown:
                raise DecodeError(f"unknown member {key!r} at {path}")
            continue
        normalised = _normalise(bytes(value), fields[name].type, f"{path}.{name}",
                                reject_unknown=reject_unknown)
        if normalised is not None:  # null leaves whatever an earlier member set
            out[name] = normalised
    for name, f in fields.items():
        if name not in out and f.required:
            zero = _zero(f.type)
            if zero is not msgspec.UNSET:
                out[name] = zero
    return out


def _decode_part(raw: bytes, tp: Any, path: str) -> Any:
    try:
        return msgspec.json.decode(raw, type=tp)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(f"{path}: {exc}") from None


def _scalar(raw: bytes, tp: Any, path: str) -> Any:
    value = _SCALAR(raw.decode())
    if tp is Any:
        return value
    base = _scalar_base(tp)
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = type(value) is int and _INT64_MIN <= value <= _INT64_MAX
    elif base is float:
        ok = type(value) in (int, float)
    elif base is str:
        ok = isinstance(value, str)
    else:
        ok = True  # leave anything exotic to msgspec.convert
    if not ok:
        raise DecodeError(f"{path}: expected {getattr(base, '__name__', base)}, got {raw!r}")
    return value


def _scalar_base(tp: Any) -> Any:
    if typing.get_origin(tp) is Literal:
        return type(typing.get_args(tp)[0])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for base in (bool, int, float, str):
            if issubclass(tp, base):
                return base
    return tp


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _accepts_raw(tp: Any) -> bool:
    if tp is msgspec.Raw:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_unwrap(a) is msgspec.Raw for a in typing.get_args(tp))
    return False


def _member(raw: msgspec.Raw, tp: Any, path: str, reject_unknown: bool) -> Any:
    """An element of an array or map: there ``null`` is the element's zero value."""
    value = _normalise(bytes(raw), tp, path, reject_unknown=reject_unknown)
    return _zero(tp) if value is None else value


def _zero(tp: Any) -> Any:
    """Go's zero value for a field that was missing or ``null`` and has no default."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if tp is msgspec.Raw:
        return msgspec.Raw()
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            return None
        if msgspec.UnsetType in args:
            return msgspec.UNSET
        return _zero(args[0])
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return {f.encode_name: _zero(f.type) for f in msgspec.structs.fields(tp) if f.required}
    if origin in (list, tuple, set, frozenset):
        return []
    if origin is dict:
        return {}
    base = _scalar_base(tp)
    if base in (bool, int, float, str):
        return base()
    return None
