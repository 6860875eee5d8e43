"""Wire timestamps (SERVER.md §4.2, §11.18)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from oversync_sa.wire import WireFormatError, format_timestamp, parse_timestamp


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 3, 22, 12, 0, 0, 123456, tzinfo=UTC), "2026-03-22T12:00:00.123456Z"),
        (datetime(2026, 3, 22, 12, 0, 0, 120000, tzinfo=UTC), "2026-03-22T12:00:00.12Z"),
        (datetime(2026, 3, 22, 12, 0, 0, tzinfo=UTC), "2026-03-22T12:00:00Z"),
        (datetime(2026, 3, 22, 8, 0, 0, 500000, tzinfo=timezone(timedelta(hours=-4))),
         "2026-03-22T12:00:00.5Z"),
    ],
)
def test_format(moment: datetime, text: str) -> None:
    assert format_timestamp(moment) == text
    assert parse_timestamp(text) == moment


def test_format_rejects_naive() -> None:
    with pytest.raises(WireFormatError, match="aware"):
        format_timestamp(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-22T12:00:00.123456789Z", datetime(2026, 3, 22, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-03-22T14:30:00+02:30", datetime(2026, 3, 22, 12, 0, 0, tzinfo=UTC)),
        ("2026-03-22t12:00:00z", datetime(2026, 3, 22, 12, 0, 0, tzinfo=UTC)),
        ("2026-03-22T07:00:00.1-05:00", datetime(2026, 3, 22, 12, 0, 0, 100000, tzinfo=UTC)),
    ],
)
def test_parse(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    ["", "2026-03-22", "2026-03-22T12:00:00", "2026-03-22 12:00:00Z", "2026-13-01T00:00:00Z",
     "2026-03-22T12:00:00.Z", "2026-03-22T12:00:00.1234567890Z", "2026-03-22T12:00:00+24:00",
     " 2026-03-22T12:00:00Z"],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(WireFormatError):
        parse_timestamp(text)
