"""``bundle_hash`` and ``byte_count`` of a committed bundle (SERVER.md §3.5, CLIENT.md §5.3).

The hash input is the Go-canonical JSON array of one object per row::

    {"key":{...},"op":"...","payload":<object or null>,"row_ordinal":i,
     "row_version":<bundle_seq>,"schema":"...","table":"..."}

Member names are already in sorted order, so each element is assembled by byte concatenation and
streamed into SHA-256; only the small key object and the strings are encoded per row. Payloads
the server stored are canonical already and are copied verbatim; payloads received over HTTP
are re-canonicalised (Go's HTTP encoder compacts but does not canonicalise them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import NamedTuple

import msgspec

from oversync_sa.wire.canonical import canonical_json, canonical_string, canonicalize, format_number
from oversync_sa.wire.keys import Op
from oversync_sa.wire.models import BundleRow

__all__ = ["HashRow", "bundle_hash", "bundle_hash_of_received_rows"]

_NULL = b"null"


class HashRow(NamedTuple):
    """One row of the hash input, in the cheapest form both sides have at hand.

    ``key`` is the wire key object (``{"id": "…"}``). ``payload`` is the row's JSON object as
    bytes, or ``None``; DELETE rows always hash as ``null`` whatever is given.
    """

    schema: str
    table: str
    key: Mapping[str, str]
    op: str
    row_version: int
    payload: bytes | None


@lru_cache(maxsize=1024)
def _string(text: str) -> bytes:
    # Schema, table and op names repeat on every row of a bundle.
    return canonical_string(text)


def _key(key: Mapping[str, str]) -> bytes:
    if len(key) == 1:
        ((column, text),) = key.items()
        if type(column) is str and type(text) is str:
            return b"{" + _string(column) + b":" + canonical_string(text) + b"}"
    return canonical_json(key)


def bundle_hash(
    rows: Iterable[HashRow], *, payloads_canonical: bool = True, first_ordinal: int = 0
) -> tuple[str, int]:
    """Return ``(lowercase hex SHA-256, byte_count)`` of the rows' canonical hash input.

    ``payloads_canonical=True`` (the server's case) trusts each payload to be Go-canonical
    already and copies it byte for byte; pass ``False`` for payloads from any other source so
    they are canonicalised first (raises :class:`CanonicalJSONError` on invalid JSON).
    ``first_ordinal`` is the ``row_ordinal`` of the first row; the hash always covers a whole
    bundle, so it stays 0 except for callers resuming a stream.
    """
    digest = hashlib.sha256()
    update = digest.update
    size = 1
    update(b"[")
    for ordinal, row in enumerate(rows, start=first_ordinal):
        payload = row.payload
        if payload is None or row.op == Op.DELETE:
            payload = _NULL
        elif not payloads_canonical:
            payload = canonicalize(payload)
        element = b"".join(
            (
                b',{"key":' if ordinal != first_ordinal else b'{"key":',
                _key(row.key),
                b',"op":',
                _string(row.op),
                b',"payload":',
                payload,
                b',"row_ordinal":',
                format_number(ordinal).encode("ascii"),
                b',"row_version":',
                format_number(row.row_version).encode("ascii"),
                b',"schema":',
                _string(row.schema),
                b',"table":',
                _string(row.table),
                b"}",
            )
        )
        update(element)
        size += len(element)
    update(b"]")
    return digest.hexdigest(), size + 1


def bundle_hash_of_received_rows(rows: Iterable[BundleRow]) -> tuple[str, int]:
    """Hash the rows of a committed bundle as received (the client's verification, §5.3).

    Rows must be the whole stream in order; ordinals are their 0-based positions. An absent
    payload counts as ``null``.
    """
    return bundle_hash(
        (
            HashRow(
                row.schema,
                row.table,
                row.key,
                row.op,
                row.row_version,
                bytes(row.payload) if _has_payload(row.payload) else None,
            )
            for row in rows
        ),
        payloads_canonical=False,
    )


def _has_payload(payload: msgspec.Raw) -> bool:
    return len(payload) > 0
