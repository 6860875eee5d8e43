"""The client's local metadata tables (CLIENT.md §2.1) and their initialisation.

The table and column names, types, defaults and CHECK constraints are the protocol's durable
contract and are kept exactly. One addition: the index :data:`DIRTY_ORDINAL_INDEX` on
``_sync_dirty_rows(dirty_ordinal)``. Every captured write asks for the next ordinal with
:data:`NEXT_DIRTY_ORDINAL_SQL` (``MAX(dirty_ordinal) + 1``); without the index that is a full scan
of the dirty set per write, i.e. quadratic for a large offline session. With it SQLite answers
``MAX`` from the last index entry, so capture stays O(log n) per write. The index also serves the
freeze, which reads dirty rows in ordinal order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final, cast

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client.errors import DatabaseInitializationError

__all__ = [
    "DEFAULT_CACHE_KIB",
    "DIRTY_ORDINAL_INDEX",
    "METADATA_TABLES",
    "NEXT_DIRTY_ORDINAL_SQL",
    "SYNC_TIMESTAMP_SQL",
    "fetch_all",
    "initialize_database",
    "record_managed_table",
]

_log = logging.getLogger("oversync_sa.client.local_schema")

#: SQL expression for "now" in the client's timestamp format (UTC, milliseconds).
SYNC_TIMESTAMP_SQL: Final = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"

#: Every metadata table, in the order ``UninstallSync`` drops them.
METADATA_TABLES: Final = (
    "_sync_source_state",
    "_sync_attachment_state",
    "_sync_operation_state",
    "_sync_apply_state",
    "_sync_row_state",
    "_sync_dirty_rows",
    "_sync_snapshot_stage",
    "_sync_outbox_bundle",
    "_sync_outbox_rows",
    "_sync_push_stage",
    "_sync_managed_tables",
)

#: Index that keeps the next-ordinal lookup of the capture triggers O(log n).
DIRTY_ORDINAL_INDEX: Final = "_sync_dirty_rows_dirty_ordinal_idx"

#: The next capture ordinal. Kept as a bare ``MAX`` over one column so SQLite's min/max
#: optimisation reads it from :data:`DIRTY_ORDINAL_INDEX` instead of scanning.
NEXT_DIRTY_ORDINAL_SQL: Final = "SELECT COALESCE(MAX(dirty_ordinal), 0) + 1 FROM _sync_dirty_rows"

_NOW = SYNC_TIMESTAMP_SQL

_DDL: Final = (
    f"""CREATE TABLE IF NOT EXISTS _sync_source_state (
  source_id             TEXT NOT NULL PRIMARY KEY,
  next_source_bundle_id INTEGER NOT NULL DEFAULT 1,
  replaced_by_source_id TEXT NOT NULL DEFAULT '',
  created_at            TEXT NOT NULL DEFAULT ({_NOW})
)""",
    """CREATE TABLE IF NOT EXISTS _sync_attachment_state (
  singleton_key             INTEGER NOT NULL PRIMARY KEY CHECK (singleton_key = 1),
  current_source_id         TEXT NOT NULL DEFAULT '',
  binding_state             TEXT NOT NULL DEFAULT 'anonymous'
                            CHECK (binding_state IN ('anonymous', 'attached')),
  attached_user_id          TEXT NOT NULL DEFAULT '',
  schema_name               TEXT NOT NULL DEFAULT '',
  last_bundle_seq_seen      INTEGER NOT NULL DEFAULT 0,
  rebuild_required          INTEGER NOT NULL DEFAULT 0,
  pending_initialization_id TEXT NOT NULL DEFAULT ''
)""",
    """CREATE TABLE IF NOT EXISTS _sync_operation_state (
  singleton_key         INTEGER NOT NULL PRIMARY KEY CHECK (singleton_key = 1),
  kind                  TEXT NOT NULL DEFAULT 'none'
                        CHECK (kind IN ('none', 'remote_replace', 'source_recovery')),
  target_user_id        TEXT NOT NULL DEFAULT '',
  reason                TEXT NOT NULL DEFAULT '',
  replacement_source_id TEXT NOT NULL DEFAULT '',
  staged_snapshot_id    TEXT NOT NULL DEFAULT '',
  snapshot_bundle_seq   INTEGER NOT NULL DEFAULT 0,
  snapshot_row_count    INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS _sync_apply_state (
  singleton_key INTEGER NOT NULL PRIMARY KEY CHECK (singleton_key = 1),
  apply_mode    INTEGER NOT NULL DEFAULT 0
)""",
    f"""CREATE TABLE IF NOT EXISTS _sync_row_state (
  schema_name TEXT NOT NULL,
  table_name  TEXT NOT NULL,
  key_json    TEXT NOT NULL,
  row_version INTEGER NOT NULL DEFAULT 0,
  deleted     INTEGER NOT NULL DEFAULT 0,
  updated_at  TEXT NOT NULL DEFAULT ({_NOW}),
  PRIMARY KEY (schema_name, table_name, key_json)
)""",
    f"""CREATE TABLE IF NOT EXISTS _sync_dirty_rows (
  schema_name      TEXT NOT NULL,
  table_name       TEXT NOT NULL,
  key_json         TEXT NOT NULL,
  op               TEXT NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
  base_row_version INTEGER NOT NULL DEFAULT 0,
  payload          TEXT,
  dirty_ordinal    INTEGER NOT NULL DEFAULT 0,
  updated_at       TEXT NOT NULL DEFAULT ({_NOW}),
  PRIMARY KEY (schema_name, table_name, key_json)
)""",
    f"CREATE INDEX IF NOT EXISTS {DIRTY_ORDINAL_INDEX} ON _sync_dirty_rows (dirty_ordinal)",
    """CREATE TABLE IF NOT EXISTS _sync_snapshot_stage (
  snapshot_id TEXT NOT NULL,
  row_ordinal INTEGER NOT NULL,
  schema_name TEXT NOT NULL,
  table_name  TEXT NOT NULL,
  key_json    TEXT NOT NULL,
  row_version INTEGER NOT NULL,
  payload     TEXT NOT NULL,
  PRIMARY KEY (snapshot_id, row_ordinal)
)""",
    """CREATE TABLE IF NOT EXISTS _sync_outbox_bundle (
  singleton_key          INTEGER NOT NULL PRIMARY KEY CHECK (singleton_key = 1),
  state                  TEXT NOT NULL DEFAULT 'none'
                         CHECK (state IN ('none', 'prepared', 'committed_remote')),
  source_id              TEXT NOT NULL DEFAULT '',
  source_bundle_id       INTEGER NOT NULL DEFAULT 0,
  canonical_request_hash TEXT NOT NULL DEFAULT '',
  row_count              INTEGER NOT NULL DEFAULT 0,
  initialization_id      TEXT NOT NULL DEFAULT '',
  remote_bundle_hash     TEXT NOT NULL DEFAULT '',
  remote_bundle_seq      INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS _sync_outbox_rows (
  source_bundle_id INTEGER NOT NULL,
  row_ordinal      INTEGER NOT NULL,
  schema_name      TEXT NOT NULL,
  table_name       TEXT NOT NULL,
  key_json         TEXT NOT NULL,
  wire_key_json    TEXT NOT NULL,
  op               TEXT NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
  base_row_version INTEGER NOT NULL DEFAULT 0,
  local_payload    TEXT,
  wire_payload     TEXT,
  PRIMARY KEY (source_bundle_id, row_ordinal)
)""",
    """CREATE TABLE IF NOT EXISTS _sync_push_stage (
  bundle_seq  INTEGER NOT NULL,
  row_ordinal INTEGER NOT NULL,
  schema_name TEXT NOT NULL,
  table_name  TEXT NOT NULL,
  key_json    TEXT NOT NULL,
  op          TEXT NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
  row_version INTEGER NOT NULL,
  payload     TEXT,
  PRIMARY KEY (bundle_seq, row_ordinal)
)""",
    """CREATE TABLE IF NOT EXISTS _sync_managed_tables (
  schema_name TEXT NOT NULL,
  table_name  TEXT NOT NULL,
  PRIMARY KEY (schema_name, table_name)
)""",
)

# All-default singleton rows; existing rows are never overwritten.
_SEED: Final = (
    "INSERT INTO _sync_attachment_state (singleton_key, current_source_id, binding_state,"
    " attached_user_id, schema_name, last_bundle_seq_seen, rebuild_required,"
    " pending_initialization_id) VALUES (1, '', 'anonymous', '', '', 0, 0, '')"
    " ON CONFLICT (singleton_key) DO NOTHING",
    "INSERT INTO _sync_operation_state (singleton_key, kind, target_user_id, reason,"
    " replacement_source_id, staged_snapshot_id, snapshot_bundle_seq, snapshot_row_count)"
    " VALUES (1, 'none', '', '', '', '', 0, 0) ON CONFLICT (singleton_key) DO NOTHING",
    "INSERT INTO _sync_apply_state (singleton_key, apply_mode) VALUES (1, 0)"
    " ON CONFLICT (singleton_key) DO NOTHING",
    "INSERT INTO _sync_outbox_bundle (singleton_key, state, source_id, source_bundle_id,"
    " canonical_request_hash, row_count, initialization_id, remote_bundle_hash,"
    " remote_bundle_seq) VALUES (1, 'none', '', 0, '', 0, '', '', 0)"
    " ON CONFLICT (singleton_key) DO NOTHING",
)

#: The page cache, in KiB, that the database file asks every connection for by default.
#: Capture triggers write four b-trees per application write; once a transaction's dirty pages
#: outgrow SQLite's default 2 MiB cache, pages spill mid-statement, the statement journal of a
#: trigger-firing write outgrows its in-memory buffer and from then on every captured row
#: journals its pages to a temporary *file* (~10 extra syscalls per row: capture drops from
#: ~50k to ~30k rows per CPU second, benchmarks/README.md). The application's own connections
#: are out of the client's reach except through this persisted default
#: (``PRAGMA default_cache_size``, a header field every connection without its own
#: ``cache_size`` starts from). It is an upper bound, not an allocation; the client's
#: connections use the same size (``runtime.CACHE_SIZE_PRAGMA``).
DEFAULT_CACHE_KIB: Final = 64 * 1024

_RESET_APPLY_MODE: Final = (
    "UPDATE _sync_apply_state SET apply_mode = 0 WHERE singleton_key = 1 AND apply_mode = 1"
)


async def fetch_all(
    conn: AsyncConnection, sql: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """Run raw SQLite SQL (``?`` placeholders) and return the rows as plain tuples.

    The client builds its SQL with quoted identifiers that may contain ``:``, so it goes through
    the driver directly instead of ``text()``, which would read those as bind parameters.
    """
    result = await conn.exec_driver_sql(sql, tuple(params))
    return [tuple(cast(Sequence[Any], row)) for row in result]


async def initialize_database(
    conn: AsyncConnection, *, default_cache_kib: int = 0
) -> None:
    """Create (idempotently) the metadata tables and commit; step 3 of client construction.

    Sets ``journal_mode=WAL`` and ``foreign_keys=ON``, creates every table of §2.1 plus
    :data:`DIRTY_ORDINAL_INDEX`, seeds the four singleton rows and forces ``apply_mode`` back to 0
    (a crash can never leave it committed as 1, but this is the documented safety net).

    ``conn`` must be a SQLite connection with no transaction in progress: SQLite refuses to change
    the journal mode inside a transaction and silently ignores ``foreign_keys`` there. Note that
    ``foreign_keys`` is per connection; other pooled connections must set it themselves.

    ``default_cache_kib`` > 0 raises the file's persisted default page cache to that size
    (:attr:`~oversync_sa.client.config.ClientConfig.default_cache_kib`; never lowers it).
    """
    if conn.dialect.name != "sqlite":
        raise DatabaseInitializationError(
            f"the oversync client needs a SQLite connection, got {conn.dialect.name!r}"
        )
    if conn.in_transaction():
        raise DatabaseInitializationError(
            "initialize_database needs a connection outside any transaction"
        )
    try:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode=WAL")).scalar()
        if str(mode).lower() != "wal":
            # In-memory databases answer "memory"; nothing to do about it, but worth knowing.
            _log.info("SQLite journal_mode is %r, not WAL", mode)
        await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        for statement in (*_DDL, *_SEED):
            await conn.exec_driver_sql(statement)
        if default_cache_kib > 0:
            await _raise_default_cache(conn, default_cache_kib)
        await conn.commit()
    except DBAPIError as exc:
        await conn.rollback()
        raise DatabaseInitializationError(f"failed to create sync metadata tables: {exc}") from exc

    try:
        await conn.exec_driver_sql(_RESET_APPLY_MODE)
        await conn.commit()
    except DBAPIError:
        # Only a safety net: the apply transactions never commit apply_mode = 1.
        await conn.rollback()
        _log.warning("could not reset _sync_apply_state.apply_mode", exc_info=True)


async def _raise_default_cache(conn: AsyncConnection, kib: int) -> None:
    """Persist ``kib`` as the database's default cache; never lowers it.

    The pragma counts pages. Builds without deprecated features ignore it (then the
    query answers nothing and this is a no-op).
    """
    (page_size,) = (await fetch_all(conn, "PRAGMA page_size"))[0]
    current = await fetch_all(conn, "PRAGMA default_cache_size")
    wanted = kib * 1024 // int(page_size)
    if current and abs(int(current[0][0])) < wanted:
        await conn.exec_driver_sql(f"PRAGMA default_cache_size = {wanted}")


async def record_managed_table(conn: AsyncConnection, schema: str, table: str) -> None:
    """Add ``(schema, table)`` to ``_sync_managed_tables`` (no-op when already there).

    The registry outlives the configuration, so destructive clears and uninstall also reach
    tables that a later configuration no longer lists. Runs in the caller's transaction.
    """
    await conn.exec_driver_sql(
        "INSERT INTO _sync_managed_tables (schema_name, table_name) VALUES (?, ?)"
        " ON CONFLICT (schema_name, table_name) DO NOTHING",
        (schema, table.strip().lower()),
    )
