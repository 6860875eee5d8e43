"""What the sync migration operations do to the database (synchronous, Alembic's connection).

Every function runs in the migration's transaction and takes the bootstrap advisory lock
(SERVER.md §2.3), so a migration and a ``SyncService.bootstrap()`` never interleave. Checks are
fail-closed and raise :class:`~oversync_sa.errors.UnsupportedSchemaError`, which aborts (and
rolls back) the migration instead of leaving a table that the next bootstrap would reject.
"""

from __future__ import annotations

import logging
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oversync_sa.errors import SchemaViolation, UnsupportedSchemaError
from oversync_sa.server.bootstrap_layout import create_layout
from oversync_sa.server.catalog_migration import (
    CatalogChange,
    CatalogEntry,
    apply_catalog_migration,
    drop_sync_triggers,
    prune_reshaped_history,
    read_catalog,
)
from oversync_sa.server.runtime_info import key_kind_for
from oversync_sa.server.runtime_schema import (
    ADVISORY_LOCK_KEY,
    LAYOUT_NAME,
    META,
    PROTOCOL_LABEL,
    SYNC_SCHEMA,
)
from oversync_sa.server.triggers import TRIGGER_FUNCTION_DDL, trigger_ddl

__all__ = [
    "create_schema",
    "drop_schema",
    "drop_runtime",
    "install_runtime",
    "refresh_table_triggers",
    "register_table",
    "runtime_installed",
    "unregister_table",
]

_log = logging.getLogger("alembic_ext.runtime")

_SCOPE_COLUMN: Final = "_sync_scope_id"
_PROBE: Final = sa.text(
    "SELECT to_regclass('sync.meta') IS NOT NULL AS has_meta,"
    " to_regclass('sync.table_catalog') IS NOT NULL AS has_catalog,"
    " EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'sync') AS has_schema"
)
_SYNC_OBJECTS: Final = sa.text(
    "SELECT count(*) FROM pg_catalog.pg_class c"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sync'"
)
_COLUMN_TYPES: Final = sa.text(
    "SELECT lower(column_name) AS name, lower(udt_name) AS udt FROM information_schema.columns"
    " WHERE table_schema = :schema AND table_name = :table"
)

_COLUMN_NAMES: Final = sa.text(
    "SELECT column_name FROM information_schema.columns"
    " WHERE table_schema = :schema AND table_name = :table"
)


def _fail(table: str, rule: str, message: str) -> UnsupportedSchemaError:
    return UnsupportedSchemaError([SchemaViolation(table=table, rule=rule, message=message)])


def _lock(conn: Connection) -> None:
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))


def runtime_installed(conn: Connection) -> bool:
    """True when both layout markers exist (the layout may still be foreign: see install)."""
    probe = conn.execute(_PROBE).one()
    return bool(probe.has_meta and probe.has_catalog)


def install_runtime(conn: Connection) -> bool:
    """Create the ``sync`` layout and functions, or refresh the functions of an existing one.

    Idempotent: an existing layout with the expected marker keeps its data, and only the two
    trigger functions are replaced (so a library upgrade that changes them lands with the next
    migration). Returns True when the layout was created.
    """
    _lock(conn)
    probe = conn.execute(_PROBE).one()
    if probe.has_meta and probe.has_catalog:
        _verify_marker(conn)
        _create_functions(conn)
        return False
    if probe.has_meta or probe.has_catalog or (probe.has_schema and conn.scalar(_SYNC_OBJECTS)):
        raise _fail(
            f"{SYNC_SCHEMA}.*",
            "layout_unknown",
            "existing sync schema uses an unsupported or partial layout; drop it first",
        )
    create_layout(conn)
    _log.info("created sync layout %s", LAYOUT_NAME)
    return True


def _create_functions(conn: Connection) -> None:
    for statement in TRIGGER_FUNCTION_DDL:
        conn.exec_driver_sql(statement)


def _verify_marker(conn: Connection) -> None:
    rows = [tuple(r) for r in conn.execute(sa.select(META)).all()]
    expected = (True, PROTOCOL_LABEL, LAYOUT_NAME)
    if rows != [expected]:
        raise _fail(
            "sync.meta",
            "layout_meta",
            f"sync.meta must hold exactly one row {expected}; found {rows}",
        )


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_schema(conn: Connection, schema: str) -> None:
    """Create the business schema synced tables live in, if missing."""
    conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {_quoted(schema)}"))


def drop_schema(conn: Connection, schema: str) -> None:
    """Drop the business schema; RESTRICT, so a schema still holding objects is an error."""
    conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {_quoted(schema)} RESTRICT"))


def drop_runtime(conn: Connection) -> None:
    """Remove every registered table's triggers, then the whole ``sync`` schema and its data."""
    _lock(conn)
    if runtime_installed(conn):
        for entry in read_catalog(conn).values():
            drop_sync_triggers(conn, entry.schema, entry.table)
    conn.execute(sa.text("DROP SCHEMA IF EXISTS sync CASCADE"))
    _log.info("dropped the sync layout")


def _require_runtime(conn: Connection, name: str) -> None:
    if not runtime_installed(conn):
        raise _fail(
            name,
            "runtime_missing",
            "the sync runtime is not installed; run op.install_sync_runtime() first",
        )


def _checked_entry(conn: Connection, schema: str, table: str, key_column: str) -> CatalogEntry:
    """Validate the live table like bootstrap checks c-e (§2.2) and describe its key."""
    name = f"{schema}.{table}"
    rows = conn.execute(_COLUMN_TYPES, {"schema": schema, "table": table})
    columns: dict[str, str] = {row.name: row.udt for row in rows}
    if not columns:
        raise _fail(name, "table_missing", f"could not load column metadata for {name}")
    if columns.get(_SCOPE_COLUMN) != "text":
        raise _fail(name, "scope_column", f"{name} must define {_SCOPE_COLUMN} TEXT")
    key_type = columns.get(key_column)
    if key_type not in ("uuid", "text"):
        raise _fail(
            name,
            "key_type",
            f"{name}.{key_column}: sync key allows only uuid and text, found {key_type!r}",
        )
    return CatalogEntry(
        schema, table, key_column, key_kind_for("uuid" if key_type == "uuid" else "text")
    )


def register_table(conn: Connection, schema: str, table: str, key_column: str) -> CatalogChange:
    """Add ``schema.table`` to the catalog (renumbering others) and install its triggers.

    The table must be empty: rows written before its capture triggers existed have no sync row
    state, which breaks later pushes and snapshots (SERVER.md §11.32).
    """
    name = f"{schema}.{table}"
    _lock(conn)
    _require_runtime(conn, name)
    entry = _checked_entry(conn, schema, table, key_column)
    target = f"{_quoted(schema)}.{_quoted(table)}"
    if conn.scalar(sa.text(f"SELECT EXISTS (SELECT 1 FROM {target})")):
        raise _fail(
            name,
            "table_not_empty",
            f"{name} already holds rows that were never captured; register tables while they "
            "are empty (SERVER.md §11.32)",
        )
    current = read_catalog(conn).values()
    change = apply_catalog_migration(conn, [*(e for e in current if e.name != name), entry])
    _install(conn, change, name)
    return change


def unregister_table(conn: Connection, schema: str, table: str) -> CatalogChange:
    """Drop ``schema.table`` from the catalog (pruning its history) and remove its triggers."""
    name = f"{schema}.{table}"
    _lock(conn)
    _require_runtime(conn, name)
    current = read_catalog(conn).values()
    if name not in {e.name for e in current}:
        raise _fail(name, "not_registered", f"{name} is not in sync.table_catalog")
    return apply_catalog_migration(conn, [e for e in current if e.name != name])


def refresh_table_triggers(conn: Connection, schema: str, table: str) -> dict[int, int]:
    """Re-validate a registered table, reinstall both triggers, prune reshaped history.

    Autogenerate emits this after a column of the table was added, dropped or renamed. The
    committed bundles holding rows of the table with another column set are pruned
    (:func:`~oversync_sa.server.catalog_migration.prune_reshaped_history`): no client could
    apply them any more, so clients behind them re-snapshot instead of getting stuck. Returns
    ``user_pk -> new floor`` (empty when the column set did not change).
    """
    name = f"{schema}.{table}"
    _lock(conn)
    _require_runtime(conn, name)
    by_name = {e.name: (i, e) for i, e in read_catalog(conn).items()}
    if name not in by_name:
        raise _fail(name, "not_registered", f"{name} is not in sync.table_catalog")
    table_id, entry = by_name[name]
    live = _checked_entry(conn, schema, table, entry.key_column)
    if live != entry:
        raise _fail(
            name,
            "catalog_key_change",
            f"{name}: sync key type changed since registration (catalog kind "
            f"{entry.key_kind}, table kind {live.key_kind})",
        )
    for statement in trigger_ddl(entry.runtime(table_id)):
        conn.execute(sa.text(statement))
    # Exact names: payloads are to_jsonb(row), keyed as the columns are spelled. They never
    # carry the hidden scope column (oversync_sa.server.payload strips it).
    names = conn.scalars(_COLUMN_NAMES, {"schema": schema, "table": table})
    columns = [n for n in names if n.casefold() != _SCOPE_COLUMN]
    return prune_reshaped_history(conn, table_id, columns)


def _install(conn: Connection, change: CatalogChange, name: str) -> None:
    for runtime_table in change.tables:
        if runtime_table.name == name:
            for statement in trigger_ddl(runtime_table):
                conn.execute(sa.text(statement))
