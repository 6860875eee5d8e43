"""The rules a declared table must follow to be synced, as lists of violations.

Rules are split in two: :func:`table_violations` needs only the table itself and runs when a
model is declared (or a Core table is marked); :func:`link_violations` needs the whole metadata
(FK targets may be declared later, e.g. in cycles) and runs when a registry is built. Both only
collect; callers decide when to raise, so one error lists every problem.

Rule identifiers (``SchemaViolation.rule``) are stable and documented in ``docs/metadata.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from oversync_sa.errors import SchemaViolation
from oversync_sa.metadata._inspect import (
    ALLOWED_ACTIONS,
    SCOPE_COLUMN,
    constraint_name,
    foreign_keys,
    key_kind,
    normalise_action,
    uuid_storage,
)
from oversync_sa.metadata.types import SyncUUID, UTCDateTime


def _where(table: sa.Table, model: str | None) -> str:
    return f"model {model} (table {table.name})" if model else f"table {table.name}"


def table_violations(
    table: sa.Table, key: str | None, model: str | None, *, orm: bool = False
) -> list[SchemaViolation]:
    """Violations visible from ``table`` alone. ``key`` is the requested sync key, if any."""
    found: list[SchemaViolation] = []
    who = _where(table, model)

    def add(rule: str, message: str, constraint: str | None = None) -> None:
        found.append(SchemaViolation(table.name, rule, f"{who}: {message}", constraint))

    if table.schema is not None:
        add(
            "table_schema",
            f"declares schema {table.schema!r}; synced tables are schema-less, the server "
            "projection places them in its configured schema",
        )
    if table.name != table.name.lower():
        add("identifier_case", "table name must be lower-case (the protocol lower-cases names)")
    if table.name.lower().startswith("_sync"):
        add("reserved_table_name", "table names starting with '_sync' are reserved for sync state")

    for column in table.columns:
        if column.name.lower() == SCOPE_COLUMN:
            add("reserved_column", f"column {column.name!r} is the hidden scope column")
        elif column.name != column.name.lower():
            add("identifier_case", f"column {column.name!r} must be lower-case")
        default = column.server_default
        if default is not None and not isinstance(default, sa.DefaultClause | sa.Computed):
            add(
                "server_default",
                f"column {column.name!r} has an unsupported server default "
                f"{type(default).__name__}; use a plain server_default or Computed",
            )
        if orm and _is_generic_local_type(column):
            add(
                "local_type",
                f"column {column.name!r} uses generic {type(column.type).__name__}, which does "
                "not store sync-compatible values on SQLite; use Mapped[uuid.UUID]/"
                "Mapped[datetime] or SyncUUID/UTCDateTime",
            )

    pk = list(table.primary_key.columns)
    if not pk:
        add("missing_primary_key", "has no primary key; the sync key must be the primary key")
    elif len(pk) > 1:
        names = ", ".join(c.name for c in pk)
        add(
            "composite_primary_key",
            f"has a composite primary key ({names}); the sync key must be the single "
            "primary-key column",
        )
    else:
        key_column = pk[0]
        if key is not None and key.lower() != key_column.name.lower():
            add(
                "key_not_primary_key",
                f"sync key {key!r} is not the primary-key column {key_column.name!r}",
            )
        elif key_kind(key_column.type) is None:
            add(
                "key_type",
                f"key column {key_column.name!r} has type {key_column.type}; only uuid and text "
                "sync keys are supported",
            )

    for ref in foreign_keys(table):
        label = ref.name or f"{', '.join(ref.columns)} -> {ref.target}"
        if len(ref.columns) != 1:
            add("composite_fk", f"composite foreign key ({', '.join(ref.columns)})", label)
        _action_violations(ref.constraint, add, label)

    for index in sorted(table.indexes, key=lambda i: constraint_name(i) or ""):
        label = constraint_name(index) or "unnamed index"
        if any(not isinstance(expr, sa.Column) for expr in index.expressions):
            add("expression_index", "expression indexes cannot be projected", label)
        if any(k.endswith("_where") and v is not None for k, v in index.dialect_kwargs.items()):
            add("partial_index", "partial indexes cannot be projected", label)
    return found


def _action_violations(fk: sa.ForeignKeyConstraint, add: Any, label: str) -> None:
    for clause, raw in (("ON DELETE", fk.ondelete), ("ON UPDATE", fk.onupdate)):
        action = normalise_action(raw)
        if action is not None and action not in ALLOWED_ACTIONS:
            add("fk_action", f"unsupported {clause} action {raw!r}", label)
    if normalise_action(fk.onupdate) in {"SET NULL", "SET DEFAULT"}:
        add(
            "fk_on_update_set_null",
            "ON UPDATE SET NULL/SET DEFAULT would also reset the server's scope column, and "
            "PostgreSQL allows a column list only for ON DELETE; use CASCADE or NO ACTION",
            label,
        )
    if fk.match is not None and fk.match.strip().upper() not in {"", "SIMPLE", "NONE"}:
        add("fk_match", f"MATCH {fk.match} is not supported; use MATCH SIMPLE", label)


def _is_generic_local_type(column: sa.Column[Any]) -> bool:
    type_ = column.type
    if isinstance(type_, sa.Uuid) and not isinstance(type_, SyncUUID):
        return True
    return isinstance(type_, sa.DateTime) and not isinstance(type_, UTCDateTime)


def link_violations(
    table: sa.Table, model: str | None, synced: Mapping[sa.Table, str]
) -> list[SchemaViolation]:
    """FK rules that need the other tables. ``synced`` maps each synced table to its key."""
    found: list[SchemaViolation] = []
    who = _where(table, model)
    for ref in foreign_keys(table):
        if len(ref.columns) != 1:
            continue  # already reported as composite_fk
        label = ref.name or f"{ref.columns[0]} -> {ref.target}"

        def add(rule: str, message: str, label: str = label) -> None:
            found.append(SchemaViolation(table.name, rule, f"{who}: {message}", label))

        parent = ref.parent_table
        if parent is None or parent not in synced:
            add(
                "fk_unsynced_parent",
                f"foreign key {ref.columns[0]} -> {ref.target} references a table that is not "
                "synced; synced tables must be FK-closed",
            )
            continue
        parent_key = synced[parent]
        if ref.parent_columns[0] != parent_key:
            add(
                "fk_target_not_key",
                f"foreign key {ref.columns[0]} -> {parent.name}.{ref.parent_columns[0]} must "
                f"reference the parent's sync key {parent_key!r}",
            )
            continue
        child_col = table.c[ref.columns[0]]
        parent_col = parent.c[parent_key]
        child_kind, parent_kind = key_kind(child_col.type), key_kind(parent_col.type)
        if child_kind != parent_kind:
            add(
                "fk_column_type",
                f"column {child_col.name!r} ({child_col.type}) must have the same kind as "
                f"{parent.name}.{parent_key} ({parent_col.type})",
            )
        elif child_kind == "uuid" and uuid_storage(child_col) != uuid_storage(parent_col):
            add(
                "uuid_storage_mismatch",
                f"column {child_col.name!r} is stored as {uuid_storage(child_col)} on SQLite "
                f"but {parent.name}.{parent_key} as {uuid_storage(parent_col)}",
            )
    return found
