"""The ``sync.*`` runtime layout of SERVER.md §1, declared once with SQLAlchemy.

Other server modules query through the :class:`~sqlalchemy.Table` objects exported here, and
bootstrap creates the layout from the same :data:`SYNC_METADATA`. Names, column order, types,
defaults and constraint names follow §1.2/§1.3 exactly so a database can be shared with the Go
server. Unnamed primary keys, foreign keys and inline checks are left unnamed on purpose: the
Go layout relies on PostgreSQL's default names (``meta_pkey``, ``row_state_table_id_fkey``...).
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = [
    "ADVISORY_LOCK_KEY",
    "BUNDLE_CAPTURE_STAGE",
    "BUNDLE_LOG",
    "BUNDLE_ROWS",
    "COUNTER_SEQUENCES",
    "ACCEPTED_PUSH_REPLAY_SEQ",
    "HISTORY_PRUNED_ERROR_SEQ",
    "LAYOUT_INDEXES",
    "LAYOUT_NAME",
    "LAYOUT_TABLES",
    "META",
    "OP_DELETE",
    "OP_INSERT",
    "OP_UPDATE",
    "PROTOCOL_LABEL",
    "PUSH_SESSIONS",
    "PUSH_SESSION_ROWS",
    "REJECTED_REGISTERED_WRITE_SEQ",
    "ROW_STATE",
    "SCOPE_STATE",
    "SNAPSHOT_SESSIONS",
    "SNAPSHOT_SESSION_ROWS",
    "SOURCE_STATE",
    "STATE_INITIALIZED",
    "STATE_INITIALIZING",
    "STATE_UNINITIALIZED",
    "SYNC_KEY_KIND_TEXT",
    "SYNC_KEY_KIND_UUID",
    "SYNC_METADATA",
    "SYNC_SCHEMA",
    "TABLE_CATALOG",
    "USER_STATE",
]

SYNC_SCHEMA: Final = "sync"
PROTOCOL_LABEL: Final = "v1"
LAYOUT_NAME: Final = "server_postgres_sync_v1"

#: ``pg_advisory_xact_lock`` key serialising bootstraps: the big-endian int64 of ``b"oversync"``.
ADVISORY_LOCK_KEY: Final = 8031718527699873379

OP_INSERT: Final = 1
OP_UPDATE: Final = 2
OP_DELETE: Final = 3

SYNC_KEY_KIND_UUID: Final = 1
SYNC_KEY_KIND_TEXT: Final = 2

STATE_UNINITIALIZED: Final = 0
STATE_INITIALIZING: Final = 1
STATE_INITIALIZED: Final = 2

SYNC_METADATA: Final = sa.MetaData(schema=SYNC_SCHEMA)

_USER_PK_FK = "sync.user_state.user_pk"
_TABLE_ID_FK = "sync.table_catalog.table_id"


def _user_pk_ref(*, primary_key: bool = False) -> sa.Column[int]:
    return sa.Column(
        "user_pk",
        sa.BigInteger,
        sa.ForeignKey(_USER_PK_FK, ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=False,
        autoincrement=False,
    )


def _table_id_ref() -> sa.Column[int]:
    return sa.Column("table_id", sa.Integer, sa.ForeignKey(_TABLE_ID_FK), nullable=False)


def _op_payload_check(table: str, payload_column: str) -> tuple[sa.CheckConstraint, ...]:
    return (
        sa.CheckConstraint("op_code IN (1, 2, 3)", name=f"{table}_op_code_chk"),
        sa.CheckConstraint(
            f"(op_code = 3 AND {payload_column} IS NULL) OR "
            f"(op_code IN (1, 2) AND {payload_column} IS NOT NULL)",
            name=f"{table}_payload_by_op_chk",
        ),
    )


META: Final = sa.Table(
    "meta",
    SYNC_METADATA,
    sa.Column("singleton_key", sa.Boolean, primary_key=True, autoincrement=False),
    sa.Column("protocol_label", sa.Text, nullable=False, server_default=sa.text("'v1'")),
    sa.Column("layout_name", sa.Text, nullable=False),
    sa.CheckConstraint("singleton_key"),
)

TABLE_CATALOG: Final = sa.Table(
    "table_catalog",
    SYNC_METADATA,
    sa.Column("table_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("schema_name", sa.Text, nullable=False),
    sa.Column("table_name", sa.Text, nullable=False),
    sa.Column("sync_key_column", sa.Text, nullable=False),
    sa.Column("sync_key_kind", sa.SmallInteger, nullable=False),
    sa.UniqueConstraint("schema_name", "table_name", name="table_catalog_schema_table_key"),
    sa.CheckConstraint("sync_key_kind IN (1, 2)", name="table_catalog_sync_key_kind_chk"),
)

USER_STATE: Final = sa.Table(
    "user_state",
    SYNC_METADATA,
    sa.Column("user_pk", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False, unique=True),
    sa.Column("next_bundle_seq", sa.BigInteger, nullable=False, server_default=sa.text("1")),
    sa.Column(
        "retained_bundle_floor", sa.BigInteger, nullable=False, server_default=sa.text("0")
    ),
    sa.CheckConstraint("next_bundle_seq >= 1", name="user_state_bundle_seq_chk"),
    sa.CheckConstraint(
        "retained_bundle_floor >= 0 AND retained_bundle_floor <= next_bundle_seq - 1",
        name="user_state_retained_floor_chk",
    ),
)

SCOPE_STATE: Final = sa.Table(
    "scope_state",
    SYNC_METADATA,
    _user_pk_ref(primary_key=True),
    sa.Column("state_code", sa.SmallInteger, nullable=False),
    sa.Column("initializer_source_id", sa.Text),
    sa.Column("initialization_id", sa.Uuid),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("initialized_at", sa.DateTime(timezone=True)),
    sa.Column("initialized_by_source_id", sa.Text),
    sa.CheckConstraint(
        "(state_code = 0"
        " AND initializer_source_id IS NULL AND initialization_id IS NULL"
        " AND lease_expires_at IS NULL"
        " AND initialized_at IS NULL AND initialized_by_source_id IS NULL)"
        " OR (state_code = 1"
        " AND initializer_source_id IS NOT NULL AND initialization_id IS NOT NULL"
        " AND lease_expires_at IS NOT NULL"
        " AND initialized_at IS NULL AND initialized_by_source_id IS NULL)"
        " OR (state_code = 2"
        " AND initializer_source_id IS NULL AND initialization_id IS NULL"
        " AND lease_expires_at IS NULL"
        " AND initialized_at IS NOT NULL AND initialized_by_source_id IS NOT NULL)",
        name="scope_state_fields_chk",
    ),
    sa.CheckConstraint("state_code IN (0, 1, 2)", name="scope_state_code_chk"),
)

SOURCE_STATE: Final = sa.Table(
    "source_state",
    SYNC_METADATA,
    _user_pk_ref(primary_key=True),
    sa.Column("source_id", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column(
        "max_committed_source_bundle_id",
        sa.BigInteger,
        nullable=False,
        server_default=sa.text("0"),
    ),
    sa.Column("replaced_by_source_id", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("retirement_reason", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.CheckConstraint(
        "state IN ('active', 'reserved', 'retired')", name="source_state_state_chk"
    ),
    sa.CheckConstraint(
        "max_committed_source_bundle_id >= 0", name="source_state_max_committed_chk"
    ),
    sa.CheckConstraint(
        "state <> 'active' OR (replaced_by_source_id = '' AND retirement_reason = '')",
        name="source_state_active_chk",
    ),
    sa.CheckConstraint(
        "state <> 'reserved' OR (replaced_by_source_id = '' AND retirement_reason = ''"
        " AND max_committed_source_bundle_id = 0)",
        name="source_state_reserved_chk",
    ),
    sa.CheckConstraint(
        "state <> 'retired' OR (replaced_by_source_id <> '' AND retirement_reason <> '')",
        name="source_state_retired_chk",
    ),
)

ROW_STATE: Final = sa.Table(
    "row_state",
    SYNC_METADATA,
    _user_pk_ref(),
    _table_id_ref(),
    sa.Column("key_bytes", sa.LargeBinary, nullable=False),
    sa.Column("bundle_seq", sa.BigInteger, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.PrimaryKeyConstraint("user_pk", "table_id", "key_bytes"),
)

BUNDLE_CAPTURE_STAGE: Final = sa.Table(
    "bundle_capture_stage",
    SYNC_METADATA,
    sa.Column("capture_ordinal", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("txid", sa.BigInteger, nullable=False),
    _user_pk_ref(),
    _table_id_ref(),
    sa.Column("op_code", sa.SmallInteger, nullable=False),
    sa.Column("key_bytes", sa.LargeBinary, nullable=False),
    sa.Column("payload_db", postgresql.JSONB),
    *_op_payload_check("bundle_capture_stage", "payload_db"),
)

BUNDLE_LOG: Final = sa.Table(
    "bundle_log",
    SYNC_METADATA,
    _user_pk_ref(),
    sa.Column("bundle_seq", sa.BigInteger, nullable=False),
    sa.Column("source_id", sa.Text, nullable=False),
    sa.Column("source_bundle_id", sa.BigInteger, nullable=False),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("byte_count", sa.BigInteger, nullable=False),
    sa.Column("bundle_hash", sa.LargeBinary, nullable=False),
    sa.Column(
        "committed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.PrimaryKeyConstraint("user_pk", "bundle_seq"),
    sa.UniqueConstraint(
        "user_pk", "source_id", "source_bundle_id", name="bundle_log_source_tuple_key"
    ),
)

BUNDLE_ROWS: Final = sa.Table(
    "bundle_rows",
    SYNC_METADATA,
    _user_pk_ref(),
    sa.Column("bundle_seq", sa.BigInteger, nullable=False),
    sa.Column("row_ordinal", sa.BigInteger, nullable=False),
    _table_id_ref(),
    sa.Column("key_bytes", sa.LargeBinary, nullable=False),
    sa.Column("op_code", sa.SmallInteger, nullable=False),
    # JSON, not JSONB: the rendered wire text must survive byte for byte.
    sa.Column("payload_wire", postgresql.JSON),
    sa.PrimaryKeyConstraint("user_pk", "bundle_seq", "row_ordinal"),
    sa.ForeignKeyConstraint(
        ["user_pk", "bundle_seq"],
        ["sync.bundle_log.user_pk", "sync.bundle_log.bundle_seq"],
        name="bundle_rows_bundle_fk",
        ondelete="CASCADE",
    ),
    *_op_payload_check("bundle_rows", "payload_wire"),
)

PUSH_SESSIONS: Final = sa.Table(
    "push_sessions",
    SYNC_METADATA,
    sa.Column("push_id", sa.Uuid, primary_key=True),
    _user_pk_ref(),
    sa.Column("source_id", sa.Text, nullable=False),
    sa.Column("source_bundle_id", sa.BigInteger, nullable=False),
    sa.Column("planned_row_count", sa.BigInteger, nullable=False),
    sa.Column(
        "next_expected_row_ordinal", sa.BigInteger, nullable=False, server_default=sa.text("0")
    ),
    sa.Column("initialization_id", sa.Uuid),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint(
        "user_pk", "source_id", "source_bundle_id", name="push_sessions_source_tuple_key"
    ),
    sa.CheckConstraint(
        "planned_row_count > 0 AND next_expected_row_ordinal >= 0"
        " AND next_expected_row_ordinal <= planned_row_count",
        name="push_sessions_row_count_chk",
    ),
)

PUSH_SESSION_ROWS: Final = sa.Table(
    "push_session_rows",
    SYNC_METADATA,
    sa.Column(
        "push_id",
        sa.Uuid,
        sa.ForeignKey("sync.push_sessions.push_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("row_ordinal", sa.BigInteger, nullable=False),
    _table_id_ref(),
    sa.Column("key_bytes", sa.LargeBinary, nullable=False),
    sa.Column("op_code", sa.SmallInteger, nullable=False),
    sa.Column("base_bundle_seq", sa.BigInteger, nullable=False),
    sa.Column("payload_apply", postgresql.JSON),
    sa.PrimaryKeyConstraint("push_id", "row_ordinal"),
    *_op_payload_check("push_session_rows", "payload_apply"),
)

SNAPSHOT_SESSIONS: Final = sa.Table(
    "snapshot_sessions",
    SYNC_METADATA,
    sa.Column("snapshot_id", sa.Uuid, primary_key=True),
    _user_pk_ref(),
    sa.Column("snapshot_bundle_seq", sa.BigInteger, nullable=False),
    sa.Column("row_count", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("byte_count", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

SNAPSHOT_SESSION_ROWS: Final = sa.Table(
    "snapshot_session_rows",
    SYNC_METADATA,
    sa.Column(
        "snapshot_id",
        sa.Uuid,
        sa.ForeignKey("sync.snapshot_sessions.snapshot_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("row_ordinal", sa.BigInteger, nullable=False),
    _table_id_ref(),
    sa.Column("key_bytes", sa.LargeBinary, nullable=False),
    sa.Column("bundle_seq", sa.BigInteger, nullable=False),
    sa.Column("payload_wire", postgresql.JSON, nullable=False),
    sa.PrimaryKeyConstraint("snapshot_id", "row_ordinal"),
    sa.UniqueConstraint(
        "snapshot_id", "table_id", "key_bytes", name="snapshot_session_rows_logical_row_key"
    ),
)

# Counters: sequences because their increments survive the rollback of the rejected write.
ACCEPTED_PUSH_REPLAY_SEQ: Final = sa.Sequence("accepted_push_replay_seq", metadata=SYNC_METADATA)
REJECTED_REGISTERED_WRITE_SEQ: Final = sa.Sequence(
    "rejected_registered_write_seq", metadata=SYNC_METADATA
)
HISTORY_PRUNED_ERROR_SEQ: Final = sa.Sequence(
    "history_pruned_error_seq", metadata=SYNC_METADATA
)
COUNTER_SEQUENCES: Final = (
    ACCEPTED_PUSH_REPLAY_SEQ,
    REJECTED_REGISTERED_WRITE_SEQ,
    HISTORY_PRUNED_ERROR_SEQ,
)

#: The §1.3 indexes, emitted after every table in this order.
LAYOUT_INDEXES: Final = (
    sa.Index(
        "bcs_tx_user_ordinal_idx",
        BUNDLE_CAPTURE_STAGE.c.txid,
        BUNDLE_CAPTURE_STAGE.c.user_pk,
        BUNDLE_CAPTURE_STAGE.c.capture_ordinal,
    ),
    sa.Index(
        "rs_user_live_snapshot_idx",
        ROW_STATE.c.user_pk,
        ROW_STATE.c.table_id,
        ROW_STATE.c.key_bytes,
        postgresql_where=ROW_STATE.c.deleted == sa.false(),
    ),
    sa.Index("ps_expires_at_idx", PUSH_SESSIONS.c.expires_at),
    sa.Index("ss_expires_at_idx", SNAPSHOT_SESSIONS.c.expires_at),
    sa.Index(
        "ssr_snapshot_table_key_idx",
        SNAPSHOT_SESSION_ROWS.c.snapshot_id,
        SNAPSHOT_SESSION_ROWS.c.table_id,
        SNAPSHOT_SESSION_ROWS.c.key_bytes,
        unique=True,
    ),
)

#: Tables in the creation order of §1.2.
LAYOUT_TABLES: Final = (
    META,
    TABLE_CATALOG,
    USER_STATE,
    SCOPE_STATE,
    SOURCE_STATE,
    ROW_STATE,
    BUNDLE_CAPTURE_STAGE,
    BUNDLE_LOG,
    BUNDLE_ROWS,
    PUSH_SESSIONS,
    PUSH_SESSION_ROWS,
    SNAPSHOT_SESSIONS,
    SNAPSHOT_SESSION_ROWS,
)
