"""Capture and owner-guard triggers of SERVER.md §3.1 and their per-table installation (§2.5).

The two PL/pgSQL functions are part of the ``sync`` layout and are created once with it. The
per-table triggers are (re)installed at every bootstrap, so a recreated business table gets its
triggers back.

One deliberate extension over the Go functions: when the transaction-local setting
``oversync.bundle_scope_filter`` is ``'on'``, the owner guard skips (returns NULL for) UPDATE and
DELETE rows owned by another scope instead of raising. Server-side ORM sessions set it so that a
statement keyed by primary key alone cannot touch, nor fail on, other scopes' rows. Go never sets
the setting, so a shared database behaves identically for Go.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.server.runtime_info import RuntimeTable

__all__ = [
    "CAPTURE_FUNCTION",
    "CAPTURE_TRIGGER",
    "OWNER_GUARD_FUNCTION",
    "OWNER_GUARD_TRIGGER",
    "SCOPE_FILTER_SETTING",
    "TRIGGER_FUNCTION_DDL",
    "create_trigger_functions",
    "install_triggers",
    "trigger_ddl",
]

_log = logging.getLogger("oversync_sa.server.triggers")

OWNER_GUARD_FUNCTION: Final = "sync.enforce_registered_row_owner"
CAPTURE_FUNCTION: Final = "sync.capture_registered_row_change"
OWNER_GUARD_TRIGGER: Final = "oversync_bundle_owner_guard"
CAPTURE_TRIGGER: Final = "oversync_bundle_capture_row"
SCOPE_FILTER_SETTING: Final = "oversync.bundle_scope_filter"

_MISSING_CONTEXT: Final = """
    IF actor IS NULL THEN
        -- sequences ignore rollback, so the rejected write stays counted
        PERFORM nextval('sync.rejected_registered_write_seq');
        RAISE EXCEPTION USING
            ERRCODE = 'P0001',
            MESSAGE = format(
                'write to registered table %I.%I requires oversync sync bundle context',
                TG_TABLE_SCHEMA, TG_TABLE_NAME);
    END IF;
"""

_OWNER_GUARD_SQL: Final = (
    """
CREATE OR REPLACE FUNCTION sync.enforce_registered_row_owner()
RETURNS trigger
LANGUAGE plpgsql
AS $guard$
DECLARE
    actor text := NULLIF(current_setting('oversync.bundle_user_id', true), '');
BEGIN
"""
    + _MISSING_CONTEXT
    + """
    IF TG_OP = 'INSERT' THEN
        IF NEW._sync_scope_id IS NULL OR NEW._sync_scope_id = '' THEN
            NEW._sync_scope_id := actor;
        ELSIF NEW._sync_scope_id <> actor THEN
            RAISE EXCEPTION USING
                ERRCODE = 'P0001',
                MESSAGE = format(
                    'scope mismatch on registered table %I.%I: actor %s cannot write owner %s',
                    TG_TABLE_SCHEMA, TG_TABLE_NAME, actor, NEW._sync_scope_id);
        END IF;
        RETURN NEW;
    END IF;

    IF OLD._sync_scope_id <> actor THEN
        IF current_setting('oversync.bundle_scope_filter', true) = 'on' THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION USING
            ERRCODE = 'P0001',
            MESSAGE = format(
                'scope mismatch on registered table %I.%I: actor %s cannot %s owner %s',
                TG_TABLE_SCHEMA, TG_TABLE_NAME, actor, lower(TG_OP), OLD._sync_scope_id);
    END IF;

    IF TG_OP = 'UPDATE' THEN
        IF NEW._sync_scope_id IS DISTINCT FROM OLD._sync_scope_id THEN
            RAISE EXCEPTION USING
                ERRCODE = 'P0001',
                MESSAGE = format(
                    'scope mutation is not allowed on registered table %I.%I',
                    TG_TABLE_SCHEMA, TG_TABLE_NAME);
        END IF;
        RETURN NEW;
    END IF;
    RETURN OLD;
END
$guard$
"""
)

# Per row this does the minimum: one to_jsonb() per row image (the key is read from the same
# document the payload comes from), one txid_current(), one INSERT. Checks and messages are
# those of the Go function; only the order of pure reads changed.
_CAPTURE_SQL: Final = (
    """
CREATE OR REPLACE FUNCTION sync.capture_registered_row_change()
RETURNS trigger
LANGUAGE plpgsql
AS $capture$
DECLARE
    actor text := NULLIF(current_setting('oversync.bundle_user_id', true), '');
    actor_pk bigint;
    key_column text := NULLIF(TG_ARGV[0], '');
    key_kind text := NULLIF(TG_ARGV[1], '');
    target_table_id integer := NULLIF(TG_ARGV[2], '')::integer;
    tx bigint;
    new_doc jsonb;
    old_key bytea;
    new_key bytea;
BEGIN
"""
    + _MISSING_CONTEXT
    + """
    actor_pk := NULLIF(current_setting('oversync.bundle_user_pk', true), '')::bigint;
    IF actor_pk IS NULL THEN
        RAISE EXCEPTION 'oversync bundle context is missing user_pk for %.%',
            TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    IF key_column IS NULL THEN
        RAISE EXCEPTION 'oversync capture trigger is missing sync key column for %.%',
            TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    IF key_kind IS NULL OR key_kind NOT IN ('1', '2') OR target_table_id IS NULL THEN
        RAISE EXCEPTION 'oversync capture trigger is missing compact metadata for %.%',
            TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    tx := txid_current();

    IF TG_OP <> 'INSERT' THEN
        IF OLD._sync_scope_id IS DISTINCT FROM actor THEN
            RAISE EXCEPTION 'oversync capture scope mismatch for %.%',
                TG_TABLE_SCHEMA, TG_TABLE_NAME;
        END IF;
        IF key_kind = '1' THEN
            old_key := uuid_send((to_jsonb(OLD) ->> key_column)::uuid);
        ELSE
            old_key := convert_to(to_jsonb(OLD) ->> key_column, 'UTF8');
        END IF;
        IF TG_OP = 'DELETE' THEN
            INSERT INTO sync.bundle_capture_stage
                (txid, user_pk, table_id, op_code, key_bytes, payload_db)
            VALUES (tx, actor_pk, target_table_id, 3, old_key, NULL);
            RETURN NULL;
        END IF;
    END IF;

    IF NEW._sync_scope_id IS DISTINCT FROM actor THEN
        RAISE EXCEPTION 'oversync capture scope mismatch for %.%',
            TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    new_doc := to_jsonb(NEW);
    IF key_kind = '1' THEN
        new_key := uuid_send((new_doc ->> key_column)::uuid);
    ELSE
        new_key := convert_to(new_doc ->> key_column, 'UTF8');
    END IF;
    new_doc := new_doc - '_sync_scope_id';

    IF TG_OP = 'INSERT' OR old_key IS NOT DISTINCT FROM new_key THEN
        INSERT INTO sync.bundle_capture_stage
            (txid, user_pk, table_id, op_code, key_bytes, payload_db)
        VALUES (
            tx, actor_pk, target_table_id,
            CASE TG_OP WHEN 'INSERT' THEN 1 ELSE 2 END, new_key, new_doc);
    ELSE
        -- a key change is a different logical row: retire the old key, create the new one
        INSERT INTO sync.bundle_capture_stage
            (txid, user_pk, table_id, op_code, key_bytes, payload_db)
        VALUES
            (tx, actor_pk, target_table_id, 3, old_key, NULL),
            (tx, actor_pk, target_table_id, 1, new_key, new_doc);
    END IF;
    RETURN NULL;
END
$capture$
"""
)

#: ``CREATE OR REPLACE FUNCTION`` statements of the two trigger functions (§1.4).
TRIGGER_FUNCTION_DDL: Final = (_OWNER_GUARD_SQL, _CAPTURE_SQL)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def trigger_ddl(table: RuntimeTable) -> tuple[str, ...]:
    """The four statements that (re)install the guard and capture triggers on ``table``."""
    target = table.sql_name  # always quoted, as §2.5 prescribes
    args = ", ".join(
        _literal(v) for v in (table.key_column, str(table.key_kind), str(table.table_id))
    )
    return (
        f"DROP TRIGGER IF EXISTS {CAPTURE_TRIGGER} ON {target}",
        f"DROP TRIGGER IF EXISTS {OWNER_GUARD_TRIGGER} ON {target}",
        f"CREATE TRIGGER {OWNER_GUARD_TRIGGER} BEFORE INSERT OR UPDATE OR DELETE ON {target}"
        f" FOR EACH ROW EXECUTE FUNCTION {OWNER_GUARD_FUNCTION}()",
        f"CREATE TRIGGER {CAPTURE_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {target}"
        f" FOR EACH ROW EXECUTE FUNCTION {CAPTURE_FUNCTION}({args})",
    )


async def create_trigger_functions(conn: AsyncConnection) -> None:
    """Create (or replace) the two trigger functions; the ``sync`` counters must exist."""
    for statement in TRIGGER_FUNCTION_DDL:
        await conn.exec_driver_sql(statement)


async def install_triggers(conn: AsyncConnection, tables: Iterable[RuntimeTable]) -> None:
    """(Re)install the per-table triggers inside the caller's transaction.

    The caller owns the transaction and the bootstrap advisory lock (§2.5).
    """
    for table in tables:
        for statement in trigger_ddl(table):
            await conn.execute(sa.text(statement))
        _log.debug("installed sync triggers on %s", table.name)
