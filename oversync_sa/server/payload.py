"""Wire canonicalisation of a stored row payload (SERVER.md §3.4).

Used for committed bundle rows, snapshot rows and the ``server_row`` of a push conflict. Two
things differ between what PostgreSQL renders and what the wire carries:

* the hidden owner column ``_sync_scope_id`` must never leave the server;
* ``bytea`` values arrive as PostgreSQL hex text (``"\\x0011ff"``) but travel as standard
  base64 with padding (``"ABH/"``).

When neither applies the input bytes are returned *untouched*: snapshot and conflict payloads
are PostgreSQL ``jsonb`` text and must stay byte-identical (their ``byte_count`` counts those
bytes). Only a real change re-serialises the object as Go-canonical JSON.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final

import msgspec

from oversync_sa.wire.canonical import canonical_json, canonicalize
from oversync_sa.wire.errors import WireFormatError

__all__ = ["SCOPE_COLUMN", "canonicalize_wire_payload", "decode_stored_binary", "wire_payload"]

SCOPE_COLUMN: Final = "_sync_scope_id"

# Only the top level is decoded; nested values stay verbatim JSON fragments.
_decode_members: Final = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_str: Final = msgspec.json.Decoder(str).decode
_NULL: Final = b"null"
_NEWLINES: Final = str.maketrans("", "", "\r\n")


def _is_scope_column(name: str) -> bool:
    # casefold() matches Go's strings.EqualFold here (e.g. U+017F LONG S folds to 's').
    return name.casefold() == SCOPE_COLUMN


def decode_stored_binary(value: str) -> bytes:
    """Bytes of a stored bytea value: ``\\x``/``\\X`` hex, otherwise standard padded base64.

    Follows Go's decoders: hex must have an even number of digits and nothing else; base64
    ignores CR/LF, requires padding and rejects characters outside the standard alphabet.
    """
    try:
        if value.startswith(("\\x", "\\X")):
            return binascii.a2b_hex(value[2:])
        return base64.b64decode(value.translate(_NEWLINES), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireFormatError(f"invalid binary value: {exc}") from exc


def canonicalize_wire_payload(payload: bytes, column_types: Mapping[str, str]) -> bytes:
    """Strip ``_sync_scope_id`` (any case) and re-encode non-null bytea values as base64.

    ``column_types`` maps lower-cased column names to PostgreSQL ``udt_name`` values; columns
    typed ``bytea`` are rewritten. Returns ``payload`` itself when nothing changed, else the
    Go-canonical JSON of the rewritten object. An empty or ``null`` payload is returned as is.
    Raises :class:`~oversync_sa.wire.errors.WireFormatError` when the payload is not a JSON
    object or a bytea value is not a decodable string.
    """
    if not payload or payload == _NULL:
        return payload
    try:
        members = _decode_members(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireFormatError(f"payload is not a JSON object: {exc}") from exc

    changed = False
    for name in [n for n in members if _is_scope_column(n)]:
        del members[name]
        changed = True
    for name, raw in members.items():
        if column_types.get(name.lower()) != "bytea" or bytes(raw) == _NULL:
            continue
        try:
            text = _decode_str(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise WireFormatError(f"bytea column {name!r} must be a JSON string") from exc
        encoded = base64.b64encode(decode_stored_binary(text)).decode("ascii")
        if encoded != text:
            members[name] = msgspec.Raw(msgspec.json.encode(encoded))
            changed = True
    if not changed:
        return payload
    return canonical_json(members, exact_integers=True)


def wire_payload(payload_db: str | bytes, column_types: Mapping[str, str]) -> bytes:
    """A captured ``jsonb`` payload as it is stored in ``bundle_rows`` and sent.

    First Go-canonical (sorted keys, Go's number and string rendering), then wire-canonicalised.
    Unlike Go, integers beyond 2^53 keep their exact digits (SERVER.md §11.3 is a defect); hash
    it through :func:`~oversync_sa.wire.float64_canonical`, which is what a Go client hashes.
    """
    canonical = canonicalize(payload_db, exact_integers=True)
    if "bytea" in column_types.values() or _may_name_scope_column(canonical):
        return canonicalize_wire_payload(canonical, column_types)
    return canonical


def _may_name_scope_column(canonical: bytes) -> bool:
    # Go-canonical text spells member names literally (only <, >, & are escaped), so a scope
    # member, in any case, shows up as these bytes; U+017F (LONG S) is the one non-ASCII
    # character that folds onto a letter of the name.
    return b"_sync_scope_id" in canonical.lower() or "\u017f".encode() in canonical
