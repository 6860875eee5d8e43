"""Sync key and operation codecs shared by the server and the client.

The wire always carries a sync key as text (``{"<column>": "<text>"}``); storage and hashing of
keys use their binary form (SERVER.md §1.1). uuid keys are *validated*, never normalised: only the
canonical lowercase dashed form is a valid wire uuid key (SERVER.md §5.2, §11.5).
"""

from __future__ import annotations

import enum
import re
import uuid
from typing import Final

from oversync_sa.wire.errors import WireFormatError

__all__ = ["KeyKind", "Op", "is_canonical_uuid", "key_bytes", "key_text"]

_CANONICAL_UUID: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


class KeyKind(enum.IntEnum):
    """Type of a sync key column; the value is the ``sync_key_kind`` code stored by the server."""

    UUID = 1
    TEXT = 2


class Op(enum.StrEnum):
    """Row operation: the value is the wire string, :attr:`code` the stored ``op_code``."""

    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"

    @property
    def code(self) -> int:
        """The ``SMALLINT`` op code (1 = INSERT, 2 = UPDATE, 3 = DELETE)."""
        return _OP_CODES[self]

    @classmethod
    def from_code(cls, code: int) -> Op:
        """The operation stored as ``code``; raises :class:`WireFormatError` for unknown codes."""
        try:
            return _OPS_BY_CODE[code]
        except KeyError:
            raise WireFormatError(f"unknown op code {code!r}") from None


_OP_CODES: Final[dict[Op, int]] = {Op.INSERT: 1, Op.UPDATE: 2, Op.DELETE: 3}
_OPS_BY_CODE: Final[dict[int, Op]] = {code: op for op, code in _OP_CODES.items()}


def is_canonical_uuid(text: str) -> bool:
    """True only for the 36-character lowercase dashed form the wire requires for uuid keys."""
    return len(text) == 36 and _CANONICAL_UUID.fullmatch(text) is not None


def key_bytes(kind: KeyKind, text: str) -> bytes:
    """Binary storage form of a wire key: 16 raw uuid bytes, or the UTF-8 of a text key.

    Raises :class:`WireFormatError` when a uuid key is not in canonical form, so callers can
    validate and convert in one step.
    """
    if kind is KeyKind.UUID:
        if not is_canonical_uuid(text):
            raise WireFormatError(f"uuid key {text!r} is not canonical dashed lowercase UUID text")
        return uuid.UUID(text).bytes
    # surrogatepass would smuggle invalid UTF-8 into storage; a str from JSON never has them.
    return text.encode("utf-8")


def key_text(kind: KeyKind, raw: bytes) -> str:
    """Wire text of a stored key; a uuid value that is not exactly 16 bytes is an error."""
    if kind is KeyKind.UUID:
        if len(raw) != 16:
            raise WireFormatError(f"stored uuid key has {len(raw)} bytes, expected 16")
        return str(uuid.UUID(bytes=bytes(raw)))
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireFormatError("stored text key is not valid UTF-8") from exc
