"""The pull page rendered to wire JSON by PostgreSQL (the HTTP fast path of ``GET /sync/pull``).

:func:`oversync_sa.server.pull.pull_encoded` returns an :class:`EncodedPullPage` whose
:attr:`~EncodedPullPage.wire` encodes to exactly the bytes the Struct path's
:class:`~oversync_sa.wire.models.PullResponse` encodes to, but no row ever becomes a Python
object: PostgreSQL renders every row as its ``BundleRow`` JSON, aggregates each bundle into its
``Bundle`` JSON and the page into the ``bundles`` array (:mod:`oversync_sa.server.json_render`
explains the byte rules), and Python only wraps that text. That removes the per-row Struct
construction, which was most of a large pull's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec
from msgspec import Raw

from oversync_sa.errors import PullFailedError
from oversync_sa.server.json_render import op_fragments, row_heads
from oversync_sa.server.read_support import key_json_sql, uuid_table_ids
from oversync_sa.server.runtime_info import SyncRuntime

__all__ = [
    "ENCODED_PAGE_SQL",
    "EncodedPullPage",
    "PullPageWire",
    "build_encoded_page",
    "encoded_page_params",
]


class PullPageWire(msgspec.Struct, kw_only=True):
    """``PullResponse`` with its bundles pre-encoded: same members, same order, same bytes."""

    stable_bundle_seq: int
    bundles: Raw
    has_more: bool


@dataclass(frozen=True, slots=True)
class EncodedPullPage:
    """One pull page as wire JSON plus what callers need without parsing it."""

    wire: PullPageWire
    bundle_count: int
    row_count: int
    #: The last returned bundle's ``bundle_seq`` (the next ``after_bundle_seq``); 0 when empty.
    last_bundle_seq: int

    @property
    def stable_bundle_seq(self) -> int:
        return self.wire.stable_bundle_seq

    @property
    def has_more(self) -> bool:
        return self.wire.has_more


_ROW_JSON: Final = (
    "($6::text[])[r.table_id] || " + key_json_sql("r.table_id", "r.key_bytes", "$5")
    + " || ($7::text[])[r.op_code] || r.bundle_seq"
    # A DELETE has no payload member at all (§11.4); a stored JSON null is written as null.
    " || CASE WHEN r.payload_wire IS NULL THEN '}'"
    " ELSE ',\"payload\":' || r.payload_wire::text || '}' END"
)

# Members of Bundle in field order; row_count and bundle_hash are omitted when zero/empty, as
# the Struct's omit_defaults does.
_BUNDLE_JSON: Final = (
    "'{\"bundle_seq\":' || b.bundle_seq || ',\"source_id\":' || to_json(b.source_id)::text"
    " || ',\"source_bundle_id\":' || b.source_bundle_id"
    " || CASE WHEN b.row_count <> 0 THEN ',\"row_count\":' || b.row_count ELSE '' END"
    " || CASE WHEN octet_length(b.bundle_hash) <> 0"
    " THEN ',\"bundle_hash\":\"' || encode(b.bundle_hash, 'hex') || '\"' ELSE '' END"
    " || ',\"rows\":[' || coalesce(agg.body, '') || ']}'"
)

#: $1 user_pk, $2 after, $3 stable, $4 max bundles, $5 uuid table ids, $6 row heads, $7 ops.
#: One row: bundles listed (with the look-ahead), bundles in the page, rows in the page, the
#: last bundle_seq, the first bundle whose rows do not all render (seq, rendered, stored; NULL
#: when none), the page's ``bundles`` array as JSON text, and the retained floor as this
#: statement saw it (the page may be read outside a transaction; see ``pull._pull_page``).
ENCODED_PAGE_SQL: Final = (
    "WITH picked AS ("
    " SELECT bundle_seq FROM sync.bundle_log"
    " WHERE user_pk = $1 AND bundle_seq > $2 AND bundle_seq <= $3"
    " ORDER BY bundle_seq LIMIT $4 + 1),"
    " page AS (SELECT b.bundle_seq, b.row_count, agg.rendered, " + _BUNDLE_JSON + " AS json"
    "  FROM (SELECT bundle_seq FROM picked ORDER BY bundle_seq LIMIT $4) p"
    "  JOIN sync.bundle_log b ON b.user_pk = $1 AND b.bundle_seq = p.bundle_seq"
    # The rows are aggregated from an ORDER BY subquery rather than with string_agg(... ORDER
    # BY ...): a subquery with ORDER BY is never flattened, so the aggregate consumes its rows
    # in that order, and the primary-key scan already delivers them sorted; the aggregate's
    # own ORDER BY would sort every bundle again (a third of the query's time on PostgreSQL 15).
    # The bundles are joined into the page the same way, so Python never copies them.
    "  CROSS JOIN LATERAL ("
    "   SELECT count(x.row_json) AS rendered, string_agg(x.row_json, ',') AS body"
    "   FROM (SELECT " + _ROW_JSON + " AS row_json"
    "    FROM sync.bundle_rows r WHERE r.user_pk = $1 AND r.bundle_seq = p.bundle_seq"
    "    ORDER BY r.row_ordinal) x) agg"
    "  ORDER BY b.bundle_seq)"
    " SELECT (SELECT count(*) FROM picked), count(*), coalesce(sum(rendered), 0),"
    " coalesce(max(bundle_seq), 0),"
    " min(bundle_seq) FILTER (WHERE rendered <> row_count),"
    " (array_agg(rendered) FILTER (WHERE rendered <> row_count))[1],"
    " (array_agg(row_count) FILTER (WHERE rendered <> row_count))[1],"
    " '[' || coalesce(string_agg(json, ','), '') || ']',"
    " (SELECT retained_bundle_floor FROM sync.user_state WHERE user_pk = $1)"
    " FROM page"
)


def encoded_page_params(runtime: SyncRuntime) -> tuple[Any, ...]:
    """Parameters ``$5..$7`` of :data:`ENCODED_PAGE_SQL` for this runtime."""
    return uuid_table_ids(runtime.tables), row_heads(runtime), op_fragments()


def build_encoded_page(stable: int, record: Any | None) -> EncodedPullPage:
    """The page from the query's one row (``None``: no page query ran).

    Fails closed with :class:`PullFailedError` on a bundle whose rows do not all render.
    """
    if record is None:
        record = (0, 0, 0, 0, None, None, None, "[]")
    listed, bundles, rows, last, bad_seq, bad_rendered, bad_stored, body = record[:8]
    if bad_seq is not None:
        # Missing rows, an unknown table_id or op_code: never hand out a partial bundle.
        raise PullFailedError(
            f"bundle {bad_seq} has {bad_rendered} renderable stored rows, "
            f"bundle_log says {bad_stored}"
        )
    return EncodedPullPage(
        wire=PullPageWire(
            stable_bundle_seq=stable, bundles=Raw(body), has_more=listed > bundles
        ),
        bundle_count=int(bundles),
        row_count=int(rows),
        last_bundle_seq=int(last),
    )
