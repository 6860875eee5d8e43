"""The created ``sync.*`` layout equals SERVER.md §1.2/§1.3, checked through pg_catalog."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from oversync_sa.server import ServiceConfig, SyncService

_B, _I, _T, _S = "bigint", "integer", "text", "smallint"
_BY, _BO, _TZ, _U = "bytea", "boolean", "timestamp with time zone", "uuid"

# (table, [(column, type, not_null, default)]) in §1.2 column order.
EXPECTED_COLUMNS: dict[str, list[tuple[str, str, bool, str | None]]] = {
    "meta": [
        ("singleton_key", _BO, True, None),
        ("protocol_label", _T, True, "'v1'::text"),
        ("layout_name", _T, True, None),
    ],
    "table_catalog": [
        ("table_id", _I, True, None),
        ("schema_name", _T, True, None),
        ("table_name", _T, True, None),
        ("sync_key_column", _T, True, None),
        ("sync_key_kind", _S, True, None),
    ],
    "user_state": [
        ("user_pk", _B, True, None),
        ("user_id", _T, True, None),
        ("next_bundle_seq", _B, True, "1"),
        ("retained_bundle_floor", _B, True, "0"),
    ],
    "scope_state": [
        ("user_pk", _B, True, None),
        ("state_code", _S, True, None),
        ("initializer_source_id", _T, False, None),
        ("initialization_id", _U, False, None),
        ("lease_expires_at", _TZ, False, None),
        ("initialized_at", _TZ, False, None),
        ("initialized_by_source_id", _T, False, None),
    ],
    "source_state": [
        ("user_pk", _B, True, None),
        ("source_id", _T, True, None),
        ("state", _T, True, None),
        ("max_committed_source_bundle_id", _B, True, "0"),
        ("replaced_by_source_id", _T, True, "''::text"),
        ("retirement_reason", _T, True, "''::text"),
    ],
    "row_state": [
        ("user_pk", _B, True, None),
        ("table_id", _I, True, None),
        ("key_bytes", _BY, True, None),
        ("bundle_seq", _B, True, None),
        ("deleted", _BO, True, "false"),
    ],
    "bundle_capture_stage": [
        ("capture_ordinal", _B, True, None),
        ("txid", _B, True, None),
        ("user_pk", _B, True, None),
        ("table_id", _I, True, None),
        ("op_code", _S, True, None),
        ("key_bytes", _BY, True, None),
        ("payload_db", "jsonb", False, None),
    ],
    "bundle_log": [
        ("user_pk", _B, True, None),
        ("bundle_seq", _B, True, None),
        ("source_id", _T, True, None),
        ("source_bundle_id", _B, True, None),
        ("row_count", _B, True, None),
        ("byte_count", _B, True, None),
        ("bundle_hash", _BY, True, None),
        ("committed_at", _TZ, True, "now()"),
    ],
    "bundle_rows": [
        ("user_pk", _B, True, None),
        ("bundle_seq", _B, True, None),
        ("row_ordinal", _B, True, None),
        ("table_id", _I, True, None),
        ("key_bytes", _BY, True, None),
        ("op_code", _S, True, None),
        ("payload_wire", "json", False, None),
    ],
    "push_sessions": [
        ("push_id", _U, True, None),
        ("user_pk", _B, True, None),
        ("source_id", _T, True, None),
        ("source_bundle_id", _B, True, None),
        ("planned_row_count", _B, True, None),
        ("next_expected_row_ordinal", _B, True, "0"),
        ("initialization_id", _U, False, None),
        ("expires_at", _TZ, True, None),
    ],
    "push_session_rows": [
        ("push_id", _U, True, None),
        ("row_ordinal", _B, True, None),
        ("table_id", _I, True, None),
        ("key_bytes", _BY, True, None),
        ("op_code", _S, True, None),
        ("base_bundle_seq", _B, True, None),
        ("payload_apply", "json", False, None),
    ],
    "snapshot_sessions": [
        ("snapshot_id", _U, True, None),
        ("user_pk", _B, True, None),
        ("snapshot_bundle_seq", _B, True, None),
        ("row_count", _B, True, "0"),
        ("byte_count", _B, True, "0"),
        ("expires_at", _TZ, True, None),
    ],
    "snapshot_session_rows": [
        ("snapshot_id", _U, True, None),
        ("row_ordinal", _B, True, None),
        ("table_id", _I, True, None),
        ("key_bytes", _BY, True, None),
        ("bundle_seq", _B, True, None),
        ("payload_wire", "json", True, None),
    ],
}

# Every constraint name: explicit ones from §1.2 plus PostgreSQL's defaults for unnamed ones.
EXPECTED_CONSTRAINTS: dict[str, set[str]] = {
    "meta": {"meta_pkey", "meta_singleton_key_check"},
    "table_catalog": {
        "table_catalog_pkey",
        "table_catalog_schema_table_key",
        "table_catalog_sync_key_kind_chk",
    },
    "user_state": {
        "user_state_pkey",
        "user_state_user_id_key",
        "user_state_bundle_seq_chk",
        "user_state_retained_floor_chk",
    },
    "scope_state": {
        "scope_state_pkey",
        "scope_state_user_pk_fkey",
        "scope_state_fields_chk",
        "scope_state_code_chk",
    },
    "source_state": {
        "source_state_pkey",
        "source_state_user_pk_fkey",
        "source_state_state_chk",
        "source_state_max_committed_chk",
        "source_state_active_chk",
        "source_state_reserved_chk",
        "source_state_retired_chk",
    },
    "row_state": {"row_state_pkey", "row_state_user_pk_fkey", "row_state_table_id_fkey"},
    "bundle_capture_stage": {
        "bundle_capture_stage_pkey",
        "bundle_capture_stage_user_pk_fkey",
        "bundle_capture_stage_table_id_fkey",
        "bundle_capture_stage_op_code_chk",
        "bundle_capture_stage_payload_by_op_chk",
    },
    "bundle_log": {"bundle_log_pkey", "bundle_log_user_pk_fkey", "bundle_log_source_tuple_key"},
    "bundle_rows": {
        "bundle_rows_pkey",
        "bundle_rows_user_pk_fkey",
        "bundle_rows_table_id_fkey",
        "bundle_rows_bundle_fk",
        "bundle_rows_op_code_chk",
        "bundle_rows_payload_by_op_chk",
    },
    "push_sessions": {
        "push_sessions_pkey",
        "push_sessions_user_pk_fkey",
        "push_sessions_source_tuple_key",
        "push_sessions_row_count_chk",
    },
    "push_session_rows": {
        "push_session_rows_pkey",
        "push_session_rows_push_id_fkey",
        "push_session_rows_table_id_fkey",
        "push_session_rows_op_code_chk",
        "push_session_rows_payload_by_op_chk",
    },
    "snapshot_sessions": {"snapshot_sessions_pkey", "snapshot_sessions_user_pk_fkey"},
    "snapshot_session_rows": {
        "snapshot_session_rows_pkey",
        "snapshot_session_rows_snapshot_id_fkey",
        "snapshot_session_rows_table_id_fkey",
        "snapshot_session_rows_logical_row_key",
    },
}

EXPECTED_INDEXES: dict[str, str] = {
    "bcs_tx_user_ordinal_idx": (
        "CREATE INDEX bcs_tx_user_ordinal_idx ON sync.bundle_capture_stage"
        " USING btree (txid, user_pk, capture_ordinal)"
    ),
    "rs_user_live_snapshot_idx": (
        "CREATE INDEX rs_user_live_snapshot_idx ON sync.row_state"
        " USING btree (user_pk, table_id, key_bytes) WHERE (deleted = false)"
    ),
    "ps_expires_at_idx": (
        "CREATE INDEX ps_expires_at_idx ON sync.push_sessions USING btree (expires_at)"
    ),
    "ss_expires_at_idx": (
        "CREATE INDEX ss_expires_at_idx ON sync.snapshot_sessions USING btree (expires_at)"
    ),
    "ssr_snapshot_table_key_idx": (
        "CREATE UNIQUE INDEX ssr_snapshot_table_key_idx ON sync.snapshot_session_rows"
        " USING btree (snapshot_id, table_id, key_bytes)"
    ),
}


async def _bootstrap_empty(engine: AsyncEngine) -> None:
    await SyncService(engine, ServiceConfig()).bootstrap()


async def _rows(conn: AsyncConnection, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in (await conn.execute(sa.text(sql))).all()]


async def test_columns_types_defaults(pg_engine: AsyncEngine) -> None:
    await _bootstrap_empty(pg_engine)
    async with pg_engine.connect() as conn:
        rows = await _rows(
            conn,
            """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                      pg_get_expr(d.adbin, d.adrelid), NULLIF(a.attidentity::text, '')
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
               WHERE n.nspname = 'sync' AND c.relkind = 'r' AND a.attnum > 0
                 AND NOT a.attisdropped
               ORDER BY c.relname, a.attnum""",
        )
    found: dict[str, list[tuple[str, str, bool, str | None]]] = {}
    identity: dict[tuple[str, str], str] = {}
    for table, column, type_, not_null, default, ident in rows:
        found.setdefault(str(table), []).append(
            (str(column), str(type_), bool(not_null), None if default is None else str(default))
        )
        if ident:
            identity[(str(table), str(column))] = str(ident)
    assert found == EXPECTED_COLUMNS
    assert identity == {
        ("user_state", "user_pk"): "a",
        ("bundle_capture_stage", "capture_ordinal"): "a",
    }


async def test_constraint_names_and_checks(pg_engine: AsyncEngine) -> None:
    await _bootstrap_empty(pg_engine)
    async with pg_engine.connect() as conn:
        rows = await _rows(
            conn,
            """SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
               FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sync'""",
        )
    found: dict[str, set[str]] = {}
    defs = {str(name): str(d) for _, name, d in rows}
    for table, name, _ in rows:
        found.setdefault(str(table), set()).add(str(name))
    assert found == EXPECTED_CONSTRAINTS
    assert defs["meta_singleton_key_check"] == "CHECK (singleton_key)"
    assert defs["bundle_rows_bundle_fk"] == (
        "FOREIGN KEY (user_pk, bundle_seq) REFERENCES sync.bundle_log(user_pk, bundle_seq)"
        " ON DELETE CASCADE"
    )
    assert defs["row_state_table_id_fkey"] == (
        "FOREIGN KEY (table_id) REFERENCES sync.table_catalog(table_id)"
    )
    assert defs["source_state_pkey"] == "PRIMARY KEY (user_pk, source_id)"
    assert "ON DELETE CASCADE" in defs["scope_state_user_pk_fkey"]


async def test_indexes_sequences_functions_meta(pg_engine: AsyncEngine) -> None:
    await _bootstrap_empty(pg_engine)
    async with pg_engine.connect() as conn:
        indexes = await _rows(
            conn,
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'sync'"
            " AND indexname = ANY(ARRAY['bcs_tx_user_ordinal_idx', 'rs_user_live_snapshot_idx',"
            " 'ps_expires_at_idx', 'ss_expires_at_idx', 'ssr_snapshot_table_key_idx',"
            " 'br_user_bundle_key_idx', 'rs_user_table_bundle_idx'])",
        )
        sequences = await _rows(
            conn,
            "SELECT sequencename FROM pg_sequences WHERE schemaname = 'sync' ORDER BY sequencename",
        )
        functions = await _rows(
            conn,
            "SELECT p.proname, pg_get_function_result(p.oid) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'sync'"
            " ORDER BY 1",
        )
        meta = await _rows(conn, "SELECT * FROM sync.meta")
    assert dict((str(a), str(b)) for a, b in indexes) == EXPECTED_INDEXES
    assert [s for (s,) in sequences] == [
        "accepted_push_replay_seq",
        "bundle_capture_stage_capture_ordinal_seq",
        "history_pruned_error_seq",
        "rejected_registered_write_seq",
        "user_state_user_pk_seq",
    ]
    assert functions == [
        ("capture_registered_row_change", "trigger"),
        ("enforce_registered_row_owner", "trigger"),
    ]
    assert meta == [(True, "v1", "server_postgres_sync_v1")]


async def test_forbidden_objects_absent(pg_engine: AsyncEngine) -> None:
    await _bootstrap_empty(pg_engine)
    async with pg_engine.connect() as conn:
        probes = await _rows(
            conn,
            """SELECT to_regclass('sync.applied_pushes'),
                      to_regclass('sync.br_user_bundle_key_idx'),
                      to_regclass('sync.rs_user_table_bundle_idx')""",
        )
        columns = await _rows(
            conn,
            """SELECT table_name, column_name FROM information_schema.columns
               WHERE table_schema = 'sync' AND (table_name, column_name) IN (
                 ('snapshot_sessions', 'last_accessed_at'), ('user_state', 'updated_at'),
                 ('scope_state', 'state'))""",
        )
    assert probes == [(None, None, None)]
    assert columns == []
