"""Wire timestamps: RFC 3339 in UTC with ``Z`` and trimmed fractional seconds (SERVER.md §4.2)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from oversync_sa.wire.errors import WireFormatError

__all__ = ["format_timestamp", "parse_timestamp"]

_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def format_timestamp(moment: datetime) -> str:
    """Render an aware datetime like Go's ``time.RFC3339Nano`` in UTC.

    ``2026-03-22T12:00:00.1234Z``: no fractional part when it is zero, otherwise the microseconds
    with trailing zeros removed. Naive datetimes are refused because their instant is ambiguous.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise WireFormatError(f"timezone-aware datetime required, got naive {moment!r}")
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    Accepts ``Z`` or a numeric offset and up to 9 fractional digits (Go emits nanoseconds);
    digits beyond microseconds are truncated, matching PostgreSQL's precision.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise WireFormatError(f"invalid RFC 3339 timestamp {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    micros = int((match.group(7) or "").ljust(6, "0")[:6])
    if match.group(8):
        tz: timezone = UTC
    else:
        offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        if offset >= timedelta(hours=24):
            raise WireFormatError(f"invalid RFC 3339 offset in {text!r}")
        tz = timezone(-offset if match.group(9) == "-" else offset)
    try:
        moment = datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
    except ValueError as exc:
        raise WireFormatError(f"invalid RFC 3339 timestamp {text!r}: {exc}") from exc
    return moment.astimezone(UTC)
