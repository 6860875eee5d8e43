"""Errors of the wire package (non-wire: they describe malformed data, not an HTTP response)."""

from __future__ import annotations

from oversync_sa.errors import OversyncError

__all__ = ["CanonicalJSONError", "WireFormatError"]


class WireFormatError(OversyncError, ValueError):
    """A value does not have the shape the wire contract requires (key, timestamp, op code).

    Callers translate it into the wire error of their endpoint (e.g. ``push_chunk_invalid``).
    """


class CanonicalJSONError(WireFormatError):
    """JSON text or a value cannot be canonicalised the way Go's ``encoding/json`` would.

    Raised for malformed JSON, ``NaN``/``Infinity`` literals, numbers outside the float64 range
    and values that are not JSON (e.g. non-string object keys).
    """
