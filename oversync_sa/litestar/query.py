"""Query and path integers parsed like Go's ``strconv.ParseInt(s, 10, 64)`` (SERVER.md §11.25).

Python's ``int()`` accepts surrounding whitespace, ``_`` separators and non-ASCII digits; Go
accepts none of them, and clients are tested against Go's answers. An empty value counts as
absent, as ``url.Values.Get`` returning ``""`` does in the Go handlers.

Each endpoint helper raises the :class:`~oversync_sa.errors.WireError` its endpoint answers with
(SERVER.md §9.2), with Go's messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from oversync_sa.errors import (
    CommittedBundleChunkInvalidError,
    InvalidRequestError,
    PushSessionNotFoundError,
    SnapshotChunkInvalidError,
    SnapshotSessionNotFoundError,
    WireError,
)

__all__ = [
    "DEFAULT_PULL_MAX_BUNDLES",
    "MAX_PULL_BUNDLES",
    "ChunkParams",
    "PullParams",
    "parse_committed_rows_params",
    "parse_go_int",
    "parse_pull_params",
    "parse_push_id",
    "parse_snapshot_id",
    "parse_snapshot_chunk_params",
    "parse_watch_after",
]

#: ``max_bundles`` when the query does not give one.
DEFAULT_PULL_MAX_BUNDLES = 1000
#: The largest ``max_bundles`` the HTTP layer accepts (the service API clamps instead).
MAX_PULL_BUNDLES = 5000

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_GO_INT = re.compile(r"[+-]?[0-9]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def parse_go_int(text: str) -> int:
    """Parse a base-10 int64 exactly as ``strconv.ParseInt(text, 10, 64)`` does.

    Raises :class:`ValueError` for anything Go rejects, including an empty string.
    """
    if not _GO_INT.fullmatch(text):
        raise ValueError(f"invalid syntax: {text!r}")
    value = int(text)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"value out of range: {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class PullParams:
    """The query of ``GET /sync/pull``."""

    after_bundle_seq: int = 0
    max_bundles: int = DEFAULT_PULL_MAX_BUNDLES
    target_bundle_seq: int = 0


@dataclass(frozen=True, slots=True)
class ChunkParams:
    """The query of a row-chunk read; ``None`` means "not given, use the service default"."""

    after_row_ordinal: int | None = None
    max_rows: int | None = None


def parse_pull_params(query: Mapping[str, str]) -> PullParams:
    """Pull's query; every failure is ``400 invalid_request`` in Go's order and wording."""
    after = _non_negative(query, "after_bundle_seq", InvalidRequestError)
    max_bundles = _optional(query, "max_bundles", InvalidRequestError)
    if max_bundles is not None and not 1 <= max_bundles <= MAX_PULL_BUNDLES:
        raise InvalidRequestError(f"max_bundles must be between 1 and {MAX_PULL_BUNDLES}")
    target = _non_negative(query, "target_bundle_seq", InvalidRequestError)
    return PullParams(
        after_bundle_seq=after or 0,
        max_bundles=DEFAULT_PULL_MAX_BUNDLES if max_bundles is None else max_bundles,
        target_bundle_seq=target or 0,
    )


def parse_watch_after(query: Mapping[str, str]) -> int:
    """``after_bundle_seq`` of ``GET /sync/watch``: absent is 0, bad or negative is 400."""
    return _non_negative(query, "after_bundle_seq", InvalidRequestError) or 0


def parse_committed_rows_params(
    bundle_seq: str, query: Mapping[str, str]
) -> tuple[int, ChunkParams]:
    """Path ``bundle_seq`` and query of committed-bundle rows (``committed_bundle_chunk_invalid``).

    The range rules (``bundle_seq > 0``, ``after_row_ordinal >= 0``, ``max_rows > 0``) are
    checked here too, so the route answers 400 before it touches the service.
    """
    try:
        seq = parse_go_int(bundle_seq)
    except ValueError:
        raise CommittedBundleChunkInvalidError("bundle_seq must be an integer") from None
    params = _chunk_params(query, CommittedBundleChunkInvalidError)
    if seq <= 0:
        raise CommittedBundleChunkInvalidError("bundle_seq must be > 0")
    _check_chunk_ranges(params, CommittedBundleChunkInvalidError)
    return seq, params


def parse_snapshot_chunk_params(query: Mapping[str, str]) -> ChunkParams:
    """Query of ``GET /sync/snapshot-sessions/{id}``, all ``snapshot_chunk_invalid``."""
    params = _chunk_params(query, SnapshotChunkInvalidError)
    _check_chunk_ranges(params, SnapshotChunkInvalidError)
    return params


def _chunk_params(query: Mapping[str, str], error: type[WireError]) -> ChunkParams:
    return ChunkParams(
        after_row_ordinal=_optional(query, "after_row_ordinal", error),
        max_rows=_optional(query, "max_rows", error),
    )


def _check_chunk_ranges(params: ChunkParams, error: type[WireError]) -> None:
    # Go checks these in the service, after the path/query syntax checks of the handler.
    if params.after_row_ordinal is not None and params.after_row_ordinal < 0:
        raise error("after_row_ordinal must be >= 0")
    if params.max_rows is not None and params.max_rows <= 0:
        raise error("max_rows must be > 0")


def _optional(query: Mapping[str, str], name: str, error: type[WireError]) -> int | None:
    text = query.get(name, "")
    if text == "":
        return None
    try:
        return parse_go_int(text)
    except ValueError:
        raise error(f"{name} must be an integer") from None


def _non_negative(query: Mapping[str, str], name: str, error: type[WireError]) -> int | None:
    value = _optional(query, name, error)
    if value is not None and value < 0:
        raise error(f"{name} must be >= 0")
    return value


def parse_push_id(push_id: str) -> str:
    """The path ``push_id``, verbatim; an id that is no UUID cannot name a session: 404."""
    if not _UUID.fullmatch(push_id):
        raise PushSessionNotFoundError(f"push session {push_id} was not found")
    return push_id


def parse_snapshot_id(snapshot_id: str) -> str:
    """The path ``snapshot_id``, verbatim: empty is 400, a non-UUID is 404.

    Go answers 500 for a non-UUID id (the database rejects the cast); no session can have such
    an id, so "not found" is the truthful answer and matches how ``push_id`` is treated.
    """
    if not snapshot_id:
        raise SnapshotChunkInvalidError("snapshot_id must be provided")
    if not _UUID.fullmatch(snapshot_id):
        raise SnapshotSessionNotFoundError(f"snapshot session {snapshot_id} was not found")
    return snapshot_id
