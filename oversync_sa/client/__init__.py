"""The SQLite side of oversync: configuration, local metadata, validation, capture, encodings.

These are the building blocks the client lifecycle (open/attach/push/pull/rebuild) is made of.
A typical construction sequence on a fresh ``AsyncConnection``::

    await initialize_database(conn)
    managed = await validate_managed_tables(conn, config)
    await install_managed_triggers(conn, managed)
    await conn.commit()
"""

from oversync_sa.client.config import (
    DEFAULT_RETRY_POLICY,
    BundleChangeWatchMode,
    ClientConfig,
    RetryPolicy,
    SyncTable,
)
from oversync_sa.client.encoding import (
    SqlValue,
    WirePayload,
    delete_row,
    delete_sql,
    key_json_sql,
    local_key_json,
    local_payload_to_wire,
    local_pk_from_key_json,
    local_pk_from_wire_key,
    local_pk_to_sql,
    payload_json_sql,
    serialize_row,
    upsert_row,
    upsert_sql,
    wire_key,
    wire_payload_to_values,
)
from oversync_sa.client.errors import (
    ConfigFieldError,
    DatabaseInitializationError,
    KeyEncodingError,
    PayloadEncodingError,
)
from oversync_sa.client.local_schema import (
    METADATA_TABLES,
    initialize_database,
    record_managed_table,
)
from oversync_sa.client.triggers import (
    TRANSITION_PENDING_MESSAGE,
    drop_triggers,
    install_managed_triggers,
    install_triggers,
    is_transition_pending_error,
    set_apply_mode,
    trigger_names,
)
from oversync_sa.client.validation import (
    ColumnInfo,
    ForeignKeyInfo,
    KeyKind,
    ManagedSchema,
    TableInfo,
    dependency_order,
    validate_managed_tables,
)

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "METADATA_TABLES",
    "TRANSITION_PENDING_MESSAGE",
    "BundleChangeWatchMode",
    "ClientConfig",
    "ColumnInfo",
    "ConfigFieldError",
    "DatabaseInitializationError",
    "ForeignKeyInfo",
    "KeyEncodingError",
    "KeyKind",
    "ManagedSchema",
    "PayloadEncodingError",
    "RetryPolicy",
    "SqlValue",
    "SyncTable",
    "TableInfo",
    "WirePayload",
    "delete_row",
    "delete_sql",
    "dependency_order",
    "drop_triggers",
    "initialize_database",
    "install_managed_triggers",
    "install_triggers",
    "is_transition_pending_error",
    "key_json_sql",
    "local_key_json",
    "local_payload_to_wire",
    "local_pk_from_key_json",
    "local_pk_from_wire_key",
    "local_pk_to_sql",
    "payload_json_sql",
    "record_managed_table",
    "serialize_row",
    "set_apply_mode",
    "trigger_names",
    "upsert_row",
    "upsert_sql",
    "validate_managed_tables",
    "wire_key",
    "wire_payload_to_values",
]
