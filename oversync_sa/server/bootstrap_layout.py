"""Bootstrap step 2 (SERVER.md §2.3): create the ``sync`` layout, or verify the existing one.

Fail closed: a ``sync`` namespace holding anything this library did not create, a half-present
marker pair, a foreign layout marker or a catalog that differs from the registration all stop
bootstrap with :class:`~oversync_sa.errors.UnsupportedSchemaError`. An existing valid layout is
reused untouched (nothing is re-created, §11.19).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, CreateSchema, CreateSequence, CreateTable

from oversync_sa.errors import SchemaViolation, UnsupportedSchemaError
from oversync_sa.server.runtime_info import RuntimeTable
from oversync_sa.server.runtime_schema import (
    ADVISORY_LOCK_KEY,
    COUNTER_SEQUENCES,
    LAYOUT_INDEXES,
    LAYOUT_NAME,
    LAYOUT_TABLES,
    META,
    PROTOCOL_LABEL,
    SYNC_SCHEMA,
    TABLE_CATALOG,
)
from oversync_sa.server.triggers import TRIGGER_FUNCTION_DDL

__all__ = ["acquire_bootstrap_lock", "create_layout", "ensure_layout"]

_log = logging.getLogger("oversync_sa.server.bootstrap")

_CATALOG_NAME: Final = "sync.table_catalog"
_META_NAME: Final = "sync.meta"

_PROBE_MARKERS: Final = sa.text(
    "SELECT to_regclass('sync.meta') IS NOT NULL AS has_meta,"
    " to_regclass('sync.table_catalog') IS NOT NULL AS has_catalog"
)
_FOREIGN_OBJECTS: Final = sa.text(
    "SELECT c.relname AS name FROM pg_catalog.pg_class c"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema"
    " UNION ALL"
    " SELECT p.proname || '()' FROM pg_catalog.pg_proc p"
    " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :schema"
    " ORDER BY 1"
)


def _fail(table: str, rule: str, message: str) -> UnsupportedSchemaError:
    return UnsupportedSchemaError([SchemaViolation(table=table, rule=rule, message=message)])


async def acquire_bootstrap_lock(conn: AsyncConnection) -> None:
    """Serialise bootstraps (and trigger installs) across processes for this transaction."""
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))


async def ensure_layout(conn: AsyncConnection, tables: Sequence[RuntimeTable]) -> bool:
    """Create or verify the layout inside the caller's transaction; True when it was created.

    The caller holds the transaction; this takes the advisory lock first.
    """
    await acquire_bootstrap_lock(conn)
    probe = (await conn.execute(_PROBE_MARKERS)).one()
    if probe.has_meta and probe.has_catalog:
        await _verify_layout(conn, tables)
        return False
    if probe.has_meta or probe.has_catalog:
        raise _fail(
            f"{SYNC_SCHEMA}.*",
            "layout_markers",
            "existing sync schema is missing required marker tables sync.meta and "
            "sync.table_catalog; drop and recreate the sync schema",
        )
    existing = (await conn.execute(_FOREIGN_OBJECTS, {"schema": SYNC_SCHEMA})).scalars().all()
    if existing:
        raise _fail(
            f"{SYNC_SCHEMA}.*",
            "layout_unknown",
            "existing sync schema uses unsupported layout; drop and recreate the sync schema "
            f"(found: {', '.join(existing)})",
        )
    await conn.run_sync(create_layout, tables)
    _log.info("created sync layout %s with %d registered table(s)", LAYOUT_NAME, len(tables))
    return True


def create_layout(conn: Connection, tables: Sequence[RuntimeTable] = ()) -> None:
    """Create the whole ``sync`` layout (schema, tables, counters, functions, marker, catalog).

    Synchronous, so Alembic's migration connection can call it directly and bootstrap through
    ``AsyncConnection.run_sync``. The caller holds the transaction and the bootstrap lock, and
    has checked that no layout exists yet.
    """
    conn.execute(CreateSchema(SYNC_SCHEMA, if_not_exists=True))
    for table in LAYOUT_TABLES:
        conn.execute(CreateTable(table))
    for sequence in COUNTER_SEQUENCES:
        conn.execute(CreateSequence(sequence, if_not_exists=True))
    for statement in TRIGGER_FUNCTION_DDL:
        conn.exec_driver_sql(statement)
    conn.execute(
        sa.insert(META).values(
            singleton_key=True, protocol_label=PROTOCOL_LABEL, layout_name=LAYOUT_NAME
        )
    )
    if tables:
        rows = [_catalog_row(t) for t in sorted(tables, key=lambda t: t.table_id)]
        conn.execute(sa.insert(TABLE_CATALOG), rows)
    for index in LAYOUT_INDEXES:
        conn.execute(CreateIndex(index, if_not_exists=True))


def _catalog_row(table: RuntimeTable) -> dict[str, object]:
    return {
        "table_id": table.table_id,
        "schema_name": table.schema,
        "table_name": table.table,
        "sync_key_column": table.key_column,
        "sync_key_kind": table.key_kind,
    }


async def _verify_layout(conn: AsyncConnection, tables: Sequence[RuntimeTable]) -> None:
    try:
        meta_rows = (await conn.execute(sa.select(META))).all()
        catalog_rows = (
            await conn.execute(sa.select(TABLE_CATALOG).order_by(TABLE_CATALOG.c.table_id))
        ).all()
    except DBAPIError as exc:
        raise _fail(
            f"{SYNC_SCHEMA}.*", "layout_unreadable", f"cannot read sync layout markers: {exc}"
        ) from exc

    expected_meta = (True, PROTOCOL_LABEL, LAYOUT_NAME)
    if len(meta_rows) != 1 or tuple(meta_rows[0]) != expected_meta:
        raise _fail(
            _META_NAME,
            "layout_meta",
            f"sync.meta must hold exactly one row {expected_meta}; found "
            f"{[tuple(r) for r in meta_rows]}; drop and recreate the sync schema",
        )

    expected = [
        tuple(_catalog_row(t).values()) for t in sorted(tables, key=lambda t: t.table_id)
    ]
    found = [tuple(row) for row in catalog_rows]
    if found != expected:
        raise _fail(
            _CATALOG_NAME,
            "table_catalog",
            "sync.table_catalog does not match the registered tables "
            f"(expected {expected}, found {found}); the registered set changed, so drop and "
            "recreate the sync schema",
        )
    _log.info("verified existing sync layout %s", LAYOUT_NAME)
