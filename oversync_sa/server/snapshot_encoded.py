"""A snapshot chunk rendered to wire JSON by PostgreSQL (the HTTP fast path of chunk reads).

Same idea and byte rules as :mod:`oversync_sa.server.pull_encoded`: PostgreSQL renders each
``SnapshotRow`` (``{"schema","table","key","row_version","payload"}``) from the stored columns
and aggregates the chunk into one text; :class:`SnapshotChunkWire` then encodes to exactly the
bytes of the Struct path's :class:`~oversync_sa.wire.models.SnapshotChunkResponse`.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from msgspec import Raw

from oversync_sa.errors import SnapshotChunkFailedError
from oversync_sa.server.json_render import row_heads
from oversync_sa.server.read_support import key_json_sql, uuid_table_ids
from oversync_sa.server.runtime_info import SyncRuntime

__all__ = [
    "ENCODED_CHUNK_SQL",
    "SnapshotChunkWire",
    "build_encoded_chunk",
    "encoded_chunk_params",
    "ordinal_bound",
]


class SnapshotChunkWire(msgspec.Struct, kw_only=True):
    """``SnapshotChunkResponse`` with its rows pre-encoded: same members, order and bytes."""

    snapshot_id: str
    snapshot_bundle_seq: int
    rows: Raw
    next_row_ordinal: int
    has_more: bool


_ROW_JSON: Final = (
    "(($6::text[])[s.table_id] || " + key_json_sql("s.table_id", "s.key_bytes", "$5")
    + " || '},\"row_version\":' || s.bundle_seq"
    " || ',\"payload\":' || s.payload_wire::text || '}')"
)

#: $1 snapshot_id, $2 after_row_ordinal, $3 the chunk's last ordinal, $4 the look-ahead
#: ordinal (both from :func:`ordinal_bound`), $5 uuid table ids, $6 row heads.
#: One row: rows in the chunk, rows rendered, the chunk's rows as a JSON array body, has_more.
#: A session's ordinals are 1..N without gaps (materialisation numbers them; the wire's
#: ``next_row_ordinal = after + rows`` relies on it too), so the chunk is the ordinal range
#: after+1 .. after+limit, read together with the one row after it that answers has_more (the
#: Struct path's limit + 1). Bounding the range matters: a fresh session has no statistics yet,
#: and with an open range the planner sorted every remaining row of the session per chunk.
ENCODED_CHUNK_SQL: Final = (
    "SELECT count(*) FILTER (WHERE x.row_ordinal <= $3),"
    " count(x.row_json) FILTER (WHERE x.row_ordinal <= $3),"
    " string_agg(x.row_json, ',') FILTER (WHERE x.row_ordinal <= $3),"
    " coalesce(bool_or(x.row_ordinal > $3), FALSE)"
    # Aggregated from an ORDER BY subquery (never flattened), so string_agg sees ordinal order.
    " FROM (SELECT s.row_ordinal, " + _ROW_JSON + " AS row_json"
    "  FROM sync.snapshot_session_rows s WHERE s.snapshot_id = $1"
    "  AND s.row_ordinal > $2 AND s.row_ordinal <= $4"
    "  ORDER BY s.row_ordinal) x"
)

_MAX_ORDINAL: Final = 2**63 - 1


def ordinal_bound(after: int, rows: int) -> int:
    """``after + rows`` capped at the largest ``bigint``: a client may send any int64 cursor."""
    return min(after + rows, _MAX_ORDINAL)


def encoded_chunk_params(runtime: SyncRuntime, after: int, limit: int) -> tuple[Any, ...]:
    """Parameters ``$3..$6`` of :data:`ENCODED_CHUNK_SQL`."""
    return (
        ordinal_bound(after, limit),
        ordinal_bound(after, limit + 1),
        uuid_table_ids(runtime.tables),
        row_heads(runtime),
    )


def build_encoded_chunk(
    snapshot_id: str, snapshot_bundle_seq: int, after: int, record: Any
) -> tuple[SnapshotChunkWire, int]:
    """The chunk response and its row count; a row that did not render fails the read."""
    count, rendered, body, has_more = record
    if rendered != count:
        # Only a table_id outside the registered tables renders NULL.
        raise SnapshotChunkFailedError(
            f"snapshot session {snapshot_id}: {count - rendered} row(s) after ordinal {after} "
            "belong to no registered table"
        )
    wire = SnapshotChunkWire(
        snapshot_id=snapshot_id,
        snapshot_bundle_seq=snapshot_bundle_seq,
        rows=Raw("[" + (body or "") + "]"),
        next_row_ordinal=after + count,
        has_more=bool(has_more),
    )
    return wire, int(count)
