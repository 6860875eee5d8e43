"""Chunk and row validation of a push upload, before any database work (SERVER.md §5.2).

Checks run in the contract's order and the first failure wins, with the contract's messages, so
clients see exactly what a Go server would answer. A valid row becomes a :class:`StagedRow`
holding what ``sync.push_session_rows`` stores: the binary key, the op code and the payload
already in its *apply* form (Go-canonical JSON, key column present, bytea values as PostgreSQL
``\\x`` hex text).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from oversync_sa.errors import PushChunkInvalidError
from oversync_sa.server.payload import SCOPE_COLUMN
from oversync_sa.server.runtime_info import RuntimeTable, SyncRuntime
from oversync_sa.wire.canonical import canonical_json, canonicalize
from oversync_sa.wire.errors import CanonicalJSONError, WireFormatError
from oversync_sa.wire.keys import KeyKind, Op, key_bytes
from oversync_sa.wire.models import PushRequestRow, PushSessionChunkRequest

__all__ = [
    "StagedRow",
    "decode_go_base64",
    "payload_columns",
    "prepare_payload",
    "prepare_row",
    "validate_chunk",
]

_IDENTIFIER: Final = re.compile(r"[a-z0-9_]+")
_NEWLINES: Final = str.maketrans("", "", "\r\n")
_NULL: Final = b"null"
_NUL_ESCAPE: Final = b"\\u0000"

_decode_members: Final = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_any: Final = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class StagedRow:
    """One validated upload row, in the form it is staged and later applied.

    ``payload`` is ``None`` for DELETE, otherwise the canonical apply payload. ``columns`` are
    the sorted, lower-cased payload member names (empty for DELETE).
    """

    table: RuntimeTable
    key: str
    key_bytes: bytes
    op: Op
    base_row_version: int
    payload: bytes | None
    columns: tuple[str, ...]


def _invalid(message: str) -> PushChunkInvalidError:
    return PushChunkInvalidError(message)


def _go_quote(value: str) -> str:
    """Go's ``%q`` for the identifier-ish strings that appear in messages."""
    return msgspec.json.encode(value).decode("utf-8")


def decode_go_base64(value: str) -> bytes:
    """Decode like Go's ``base64.StdEncoding``: ``+/`` alphabet, padding required, CR/LF ignored.

    Raises ``binascii.Error`` for anything else (URL-safe characters, missing or excess padding,
    data after padding).
    """
    return binascii.a2b_base64(value.translate(_NEWLINES), strict_mode=True)


def payload_columns(members: Sequence[str]) -> tuple[str, ...]:
    """The column list of a payload: member names lower-cased and sorted (§5.2 rule 8)."""
    return tuple(sorted(name.lower() for name in members))


def _resolve_table(row: PushRequestRow, runtime: SyncRuntime) -> RuntimeTable:
    schema = row.schema.strip().lower() or "public"
    table = row.table.strip().lower()
    if not _IDENTIFIER.fullmatch(schema):
        raise _invalid(f"invalid schema name {_go_quote(row.schema)}")
    if not _IDENTIFIER.fullmatch(table):
        raise _invalid(f"invalid table name {_go_quote(row.table)}")
    found = runtime.by_name.get(f"{schema}.{table}")
    if found is None:
        raise _invalid(f"table {schema}.{table} is not registered")
    return found


def _resolve_key(row: PushRequestRow, table: RuntimeTable) -> tuple[str, bytes]:
    column = table.key_column
    if column not in row.key:
        raise _invalid(f"row key for {table.name} must include {_go_quote(column)}")
    value = row.key[column]
    if not isinstance(value, str):
        raise _invalid(f"row key {table.name}.{column} must be a string")
    try:
        return value, key_bytes(KeyKind(table.key_kind), value)
    except WireFormatError:
        raise _invalid(
            f"row key {table.name}.{column} must use canonical dashed lowercase UUID text"
        ) from None


def _check_columns(
    name: str,
    members: Mapping[str, msgspec.Raw],
    column_types: Mapping[str, str],
    *,
    may_hold_nul: bool,
) -> None:
    """Reject payload members the commit could never apply (beyond Go, see docs/interop.md).

    Go stages these and fails the whole commit with a 500. Every check here is one that
    PostgreSQL would make at commit anyway, so rejecting early changes no successful push.
    ``column_types`` empty means the column set is unknown (no bootstrap facts): skip.
    ``may_hold_nul`` is whether the payload text has a ``\\u0000`` escape at all (the common
    case has none, and then no value needs decoding).
    """
    seen: dict[str, str] = {}
    for member in sorted(members):
        column = member.lower()
        if column == SCOPE_COLUMN:
            # The exact-case name is refused above with Go's message; other spellings would
            # collide with the scope column the commit sets itself.
            raise _invalid(
                f"payload for {name} must not include hidden scope column {_go_quote(member)}"
            )
        if column in seen:
            raise _invalid(
                f"payload for {name} names column {_go_quote(column)} twice "
                f"({_go_quote(seen[column])} and {_go_quote(member)}); send it once"
            )
        seen[column] = member
        if column_types and column not in column_types:
            raise _invalid(
                f"payload for {name} contains unknown column {_go_quote(member)}: the server "
                "table has no such column; drop it from the client schema or add it on the server"
            )
        if may_hold_nul and _holds_nul(_decode_any(members[member])):
            raise _invalid(
                f"payload value {name}.{column} contains a NUL character (\\u0000), "
                "which PostgreSQL cannot store in text or jsonb"
            )


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return False


def prepare_payload(
    raw: bytes, table: RuntimeTable, key: str, column_types: Mapping[str, str]
) -> tuple[bytes, tuple[str, ...]]:
    """Validate an INSERT/UPDATE payload and return ``(apply payload, column list)``.

    The payload is decoded the way Go decodes it (numbers become float64, duplicate members keep
    the last value) except that integers beyond 2^53 stay exact (Go rounds them, a defect:
    SERVER.md §11.3), the key column is added when absent, member names are lower-cased (the
    columns they address), bytea values are turned from base64 into ``\\x`` hex, and the result
    is Go-canonical JSON.
    """
    name = table.name
    try:
        canonical = canonicalize(raw, exact_integers=True)
        members = _decode_members(canonical)
    except (CanonicalJSONError, msgspec.DecodeError, msgspec.ValidationError):
        raise _invalid(f"payload for {name} must be a JSON object") from None
    except RecursionError:
        # Deeper than the canonical encoder's stack (hundreds of levels): Go would stage it,
        # here it is refused rather than failing the upload with a 500.
        raise _invalid(f"payload for {name} is nested too deeply") from None
    if SCOPE_COLUMN in members:
        raise _invalid(
            f"payload for {name} must not include hidden scope column {_go_quote(SCOPE_COLUMN)}"
        )
    changed = False
    key_column = table.key_column
    if key_column in members:
        if _decode_any(members[key_column]) != key:
            raise _invalid(f"payload key {name}.{key_column} must match request key")
    else:
        members[key_column] = msgspec.Raw(msgspec.json.encode(key))
        changed = True
    for member in sorted(members):
        if not _IDENTIFIER.fullmatch(member.lower()):
            raise _invalid(f"payload for {name} contains invalid column {_go_quote(member)}")
    # The key may have been added above, so it is not in ``canonical``.
    may_hold_nul = _NUL_ESCAPE in canonical or "\x00" in key
    _check_columns(name, members, column_types, may_hold_nul=may_hold_nul)
    for member in sorted(members):
        value = members[member]
        if column_types.get(member.lower()) != "bytea" or bytes(value) == _NULL:
            continue
        text = _decode_any(value)
        if not isinstance(text, str):
            raise _invalid(f"payload binary field {name}.{member} must be a base64 string")
        try:
            data = decode_go_base64(text)
        except (binascii.Error, ValueError):
            raise _invalid(f"payload binary field {name}.{member} must be valid base64") from None
        members[member] = msgspec.Raw(msgspec.json.encode("\\x" + data.hex()))
        changed = True
    if any(member != member.lower() for member in members):
        # PostgreSQL matches JSON keys to columns case-sensitively, so Go's "Name" silently
        # writes NULL into name (SERVER.md §11.20); the columns are lower-case, so are the keys.
        members = {member.lower(): value for member, value in members.items()}
        changed = True
    if changed:
        canonical = canonical_json(members, exact_integers=True)
    return canonical, payload_columns(list(members))


def prepare_row(
    row: PushRequestRow, runtime: SyncRuntime, seen: set[tuple[int, bytes]]
) -> StagedRow:
    """Validate one row (§5.2 rules 1-8); ``seen`` collects targets to reject duplicates."""
    table = _resolve_table(row, runtime)
    op_text = row.op.strip().upper()
    if op_text not in Op.__members__:
        raise _invalid(f"invalid op {_go_quote(row.op)}")
    op = Op(op_text)
    key, raw_key = _resolve_key(row, table)
    target = (table.table_id, raw_key)
    if target in seen:
        raise _invalid(f"duplicate target row in push request: {table.name} {key}")
    seen.add(target)
    has_payload = len(row.payload) > 0
    if op is Op.DELETE:
        if has_payload:
            raise _invalid(f"DELETE for {table.name} must not include payload")
        return StagedRow(table, key, raw_key, op, row.base_row_version, None, ())
    if not has_payload:
        raise _invalid(f"{op.value} for {table.name} requires payload")
    payload, columns = prepare_payload(
        bytes(row.payload), table, key, runtime.column_types.get(table.name, {})
    )
    return StagedRow(table, key, raw_key, op, row.base_row_version, payload, columns)


def validate_chunk(
    request: PushSessionChunkRequest, runtime: SyncRuntime, max_rows: int
) -> list[StagedRow]:
    """All pre-database checks of a chunk upload, in contract order; raises on the first.

    Duplicates are only detected within this chunk; duplicates across chunks are a commit-time
    error (§5.3 step 4).
    """
    if request.start_row_ordinal < 0:
        raise _invalid("start_row_ordinal must be >= 0")
    if not request.rows:
        raise _invalid("rows must not be empty")
    if len(request.rows) > max_rows:
        raise _invalid(
            f"rows length {len(request.rows)} exceeds max_rows_per_push_chunk {max_rows}"
        )
    seen: set[tuple[int, bytes]] = set()
    return [prepare_row(row, runtime, seen) for row in request.rows]
