"""Response JSON rendered by PostgreSQL, byte-identical to what the wire Structs encode to.

The read paths that return many rows (pull pages, snapshot chunks) can let PostgreSQL build
each row's wire object as text instead of fetching columns and building one msgspec Struct per
row in Python. That is only allowed when the bytes are exactly those msgspec writes for the
Struct path (``oversync_sa.wire.models``): members in field order, no whitespace, omitted
members omitted. The pieces that never vary per row (``{"schema":…,"table":…,"key":{"<col>":``
and the op member) are encoded here, once per request, with msgspec itself and passed to SQL as
``text[]`` parameters indexed by ``table_id`` / ``op_code``; per-row strings are escaped with
``to_json(text)``, whose escaping equals msgspec's (tests pin that down). Stored payloads are
already the wire text and are concatenated as they are.
"""

from __future__ import annotations

from typing import Final

import msgspec

from oversync_sa.errors import OversyncError
from oversync_sa.server.runtime_info import SyncRuntime
from oversync_sa.wire.keys import Op

__all__ = ["op_fragments", "row_heads"]

_encode: Final = msgspec.json.encode


def _string(value: str) -> str:
    return _encode(value).decode("utf-8")


def row_heads(runtime: SyncRuntime) -> list[str | None]:
    """``{"schema":"s","table":"t","key":{"<key column>":`` per table, at index ``table_id - 1``.

    PostgreSQL arrays from asyncpg lists are 1-based, so ``$n::text[][table_id]`` picks a table's
    head in SQL. Unknown ids are NULL there, which turns the whole row NULL; the callers count
    rendered rows against the expected count and fail closed.
    """
    tables = runtime.tables
    if not tables:
        return []
    if min(t.table_id for t in tables) < 1:
        raise OversyncError(
            "table_catalog holds a table_id below 1; table ids are 1-based positions (§2.3), "
            "re-run bootstrap with migrate_table_catalog to renumber the catalog"
        )
    heads: list[str | None] = [None] * max(t.table_id for t in tables)
    for table in tables:
        heads[table.table_id - 1] = (
            f'{{"schema":{_string(table.schema)},"table":{_string(table.table)},'
            f'"key":{{{_string(table.key_column)}:'
        )
    return heads


def op_fragments() -> list[str]:
    """``},"op":"<OP>","row_version":`` at index ``op_code - 1`` (closes the key object)."""
    by_code = sorted(Op, key=lambda op: op.code)
    if [op.code for op in by_code] != list(range(1, len(by_code) + 1)):
        raise OversyncError("op codes must be 1..n for SQL-rendered rows")  # pragma: no cover
    return [f'}},"op":{_string(op.value)},"row_version":' for op in by_code]
