"""Go ``strconv.ParseInt`` rules and the endpoint parameter helpers (SERVER.md §9.2, §11.25)."""

from __future__ import annotations

import pytest

from oversync_sa.errors import (
    CommittedBundleChunkInvalidError,
    InvalidRequestError,
    PushSessionNotFoundError,
    SnapshotChunkInvalidError,
    SnapshotSessionNotFoundError,
)
from oversync_sa.litestar.query import (
    ChunkParams,
    PullParams,
    parse_committed_rows_params,
    parse_go_int,
    parse_pull_params,
    parse_push_id,
    parse_snapshot_chunk_params,
    parse_snapshot_id,
    parse_watch_after,
)

_UUID = "0b0f6a2e-6d2c-4f5e-9a57-1c2d3e4f5a6b"


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("+7", 7), ("-7", -7), ("007", 7), ("9223372036854775807", 2**63 - 1),
     ("-9223372036854775808", -(2**63))],
)
def test_go_int_accepts(text: str, value: int) -> None:
    assert parse_go_int(text) == value


@pytest.mark.parametrize(
    "text",
    ["", " 1", "1 ", "1_000", "0x10", "1.0", "1e3", "+", "-", "\u0661", "9223372036854775808",
     "-9223372036854775809", "++1"],
)
def test_go_int_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid syntax|out of range"):
        parse_go_int(text)


def test_pull_defaults_and_empty_values_are_absent() -> None:
    assert parse_pull_params({}) == PullParams(0, 1000, 0)
    empty = {"after_bundle_seq": "", "max_bundles": "", "target_bundle_seq": ""}
    assert parse_pull_params(empty) == PullParams(0, 1000, 0)
    full = {"after_bundle_seq": "5", "max_bundles": "5000", "target_bundle_seq": "9"}
    assert parse_pull_params(full) == PullParams(5, 5000, 9)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"after_bundle_seq": "x"}, "after_bundle_seq must be an integer"),
        ({"after_bundle_seq": "-1"}, "after_bundle_seq must be >= 0"),
        ({"max_bundles": " 5"}, "max_bundles must be an integer"),
        ({"max_bundles": "0"}, "max_bundles must be between 1 and 5000"),
        ({"max_bundles": "5001"}, "max_bundles must be between 1 and 5000"),
        ({"target_bundle_seq": "1_0"}, "target_bundle_seq must be an integer"),
        ({"target_bundle_seq": "-1"}, "target_bundle_seq must be >= 0"),
    ],
)
def test_pull_errors_are_invalid_request(query: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_pull_params(query)
    assert info.value.message == message


def test_watch_after() -> None:
    assert parse_watch_after({}) == 0
    assert parse_watch_after({"after_bundle_seq": "12"}) == 12
    with pytest.raises(InvalidRequestError, match=">= 0"):
        parse_watch_after({"after_bundle_seq": "-3"})


def test_committed_rows_params() -> None:
    assert parse_committed_rows_params("3", {}) == (3, ChunkParams(None, None))
    got = parse_committed_rows_params("3", {"after_row_ordinal": "0", "max_rows": "10"})
    assert got == (3, ChunkParams(0, 10))


@pytest.mark.parametrize(
    ("seq", "query", "message"),
    [
        ("x", {}, "bundle_seq must be an integer"),
        ("1", {"after_row_ordinal": "a"}, "after_row_ordinal must be an integer"),
        ("1", {"max_rows": "1.5"}, "max_rows must be an integer"),
        ("0", {"after_row_ordinal": "-1"}, "bundle_seq must be > 0"),
        ("1", {"after_row_ordinal": "-1"}, "after_row_ordinal must be >= 0"),
        ("1", {"max_rows": "0"}, "max_rows must be > 0"),
    ],
)
def test_committed_rows_errors(seq: str, query: dict[str, str], message: str) -> None:
    with pytest.raises(CommittedBundleChunkInvalidError) as info:
        parse_committed_rows_params(seq, query)
    assert info.value.message == message


def test_snapshot_chunk_params() -> None:
    assert parse_snapshot_chunk_params({"after_row_ordinal": "4"}) == ChunkParams(4, None)
    for query in ({"after_row_ordinal": "-1"}, {"max_rows": "0"}, {"max_rows": "many"}):
        with pytest.raises(SnapshotChunkInvalidError):
            parse_snapshot_chunk_params(query)


def test_push_id_must_be_a_uuid_and_is_echoed_verbatim() -> None:
    assert parse_push_id(_UUID.upper()) == _UUID.upper()
    for bad in ("not-a-uuid", "", f" {_UUID}", f"{{{_UUID}}}"):
        with pytest.raises(PushSessionNotFoundError):
            parse_push_id(bad)


def test_snapshot_id_empty_is_400_and_non_uuid_is_404() -> None:
    assert parse_snapshot_id(_UUID) == _UUID
    with pytest.raises(SnapshotChunkInvalidError, match="must be provided"):
        parse_snapshot_id("")
    with pytest.raises(SnapshotSessionNotFoundError):
        parse_snapshot_id("abc")
