"""Derive the PostgreSQL server tables and the SQLite client tables from one declaration.

Both functions return a new ``MetaData`` holding only the synced tables, ready for
``create_all`` or Alembic autogenerate. The declared tables are never modified.

Server side (what SERVER.md §2 bootstrap accepts):

* tables in ``schema``, with a leading ``_sync_scope_id TEXT NOT NULL``;
* primary key ``(_sync_scope_id, key)``, every unique constraint/index scope-first;
* every FK scope-inclusive, ``(_sync_scope_id, col) -> parent(_sync_scope_id, key)``,
  ``DEFERRABLE INITIALLY DEFERRED``, actions kept; ``ON DELETE SET NULL``/``SET DEFAULT``
  use PostgreSQL's column-list form so the scope column is never reset (SERVER.md §3.1, §11.31).

Client side (what CLIENT.md §1.2 accepts): plain single-column keys and FKs, UUID keys and UUID
FK columns as 16-byte BLOBs, other UUIDs as text, instants as RFC 3339 UTC text, booleans as
integers; FKs are made ``DEFERRABLE INITIALLY DEFERRED`` like the reference client's tables.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import SchemaItem
from sqlalchemy.types import TypeDecorator, TypeEngine

from oversync_sa.errors import ConfigurationError
from oversync_sa.metadata._inspect import (
    INFO_KEY,
    SCOPE_COLUMN,
    constraint_name,
    foreign_keys,
    key_kind,
    normalise_action,
    uuid_storage,
)
from oversync_sa.metadata.registry import SyncedTableInfo, sync_registry
from oversync_sa.metadata.types import SyncBoolean, SyncUUID, UTCDateTime

__all__ = ["SERVER_INFO_KEY", "client_projection", "server_projection"]

#: ``Table.info`` key of a server-projected table; holds the declared table's registration.
SERVER_INFO_KEY = "oversync.server"

_SQLITE_RFC3339_NOW = sa.text("(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))")

_PG_PREPARER = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]


def server_projection(source: Any, schema: str = "business") -> sa.MetaData:
    """The PostgreSQL tables for the synced models of ``source`` (a base class or MetaData).

    Raises :class:`~oversync_sa.errors.UnsupportedSchemaError` if any table cannot be synced
    and :class:`~oversync_sa.errors.ConfigurationError` for an unusable ``schema`` name.
    """
    _check_schema_name(schema)
    registry = sync_registry(source)
    target = sa.MetaData()
    for info in registry:
        _server_table(info, target, schema)
    return target


def client_projection(source: Any) -> sa.MetaData:
    """The SQLite tables for the synced models of ``source`` (a base class or MetaData).

    Projected tables carry the declared registration in ``Table.info["oversync"]``, so
    ``sync_registry(client_projection(Base))`` describes the same tables.
    """
    registry = sync_registry(source)
    target = sa.MetaData()
    for info in registry:
        _client_table(info, target)
    return target


def _check_schema_name(schema: str) -> None:
    if not schema or schema != schema.strip() or "." in schema or schema != schema.lower():
        raise ConfigurationError(
            f"server schema must be a non-empty lower-case name without dots, got {schema!r}"
        )


def _server_table(info: SyncedTableInfo, target: sa.MetaData, schema: str) -> sa.Table:
    declared = info.table
    key = info.key_column
    items: list[SchemaItem] = [sa.Column(SCOPE_COLUMN, sa.Text(), nullable=False)]
    for column in declared.columns:
        type_ = sa.Text() if column.name == key and info.key_kind == "text" else column.type
        items.append(_clone_column(column, type_, is_key=column.name == key))
    items.append(
        sa.PrimaryKeyConstraint(SCOPE_COLUMN, key, name=constraint_name(declared.primary_key))
    )
    for unique in _uniques(declared):
        items.append(
            sa.UniqueConstraint(
                SCOPE_COLUMN, *(c.name for c in unique.columns), name=constraint_name(unique)
            )
        )
    items += _checks(declared)
    for ref in foreign_keys(declared):
        assert ref.parent_table is not None  # the registry guarantees a synced parent
        parent, fk_column = ref.parent_table.name, ref.columns[0]
        fk = ref.constraint
        items.append(
            sa.ForeignKeyConstraint(
                [SCOPE_COLUMN, fk_column],
                [f"{schema}.{parent}.{SCOPE_COLUMN}", f"{schema}.{parent}.{ref.parent_columns[0]}"],
                name=ref.name,
                ondelete=_server_ondelete(fk.ondelete, fk_column),
                onupdate=normalise_action(fk.onupdate),
                deferrable=True,
                initially="DEFERRED",
                use_alter=fk.use_alter,
            )
        )
    table = sa.Table(
        declared.name,
        target,
        *items,
        schema=schema,
        comment=declared.comment,
        info={SERVER_INFO_KEY: info.registration},
    )
    for index in _indexes(declared):
        columns = [c.name for c in index.columns]
        if index.unique:
            columns.insert(0, SCOPE_COLUMN)
        sa.Index(index.name, *(table.c[c] for c in columns), unique=index.unique,
                 **dict(index.dialect_kwargs))
    return table


def _client_table(info: SyncedTableInfo, target: sa.MetaData) -> sa.Table:
    declared = info.table
    key = info.key_column
    items: list[SchemaItem] = []
    for column in declared.columns:
        type_ = _client_type(column, column.name == key)
        clone = _clone_column(column, type_, is_key=column.name == key)
        if isinstance(type_, UTCDateTime) and _is_now_default(column.server_default):
            # SQLite's CURRENT_TIMESTAMP is "YYYY-MM-DD HH:MM:SS"; store RFC 3339 like writes.
            clone.server_default = sa.DefaultClause(_SQLITE_RFC3339_NOW)
        items.append(clone)
    items.append(sa.PrimaryKeyConstraint(key, name=constraint_name(declared.primary_key)))
    for unique in _uniques(declared):
        items.append(
            sa.UniqueConstraint(*(c.name for c in unique.columns), name=constraint_name(unique))
        )
    items += _checks(declared)
    for ref in foreign_keys(declared):
        assert ref.parent_table is not None
        fk = ref.constraint
        items.append(
            sa.ForeignKeyConstraint(
                list(ref.columns),
                [f"{ref.parent_table.name}.{ref.parent_columns[0]}"],
                name=ref.name,
                ondelete=normalise_action(fk.ondelete),
                onupdate=normalise_action(fk.onupdate),
                deferrable=True,
                initially="DEFERRED",
                use_alter=fk.use_alter,
            )
        )
    table = sa.Table(
        declared.name,
        target,
        *items,
        comment=declared.comment,
        info={INFO_KEY: info.registration},
    )
    for index in _indexes(declared):
        sa.Index(index.name, *(table.c[c.name] for c in index.columns), unique=index.unique,
                 **dict(index.dialect_kwargs))
    return table


def _client_type(column: sa.Column[Any], is_key: bool) -> TypeEngine[Any]:
    """SQLite storage for a declared column; user-defined ``TypeDecorator`` s are kept."""
    type_ = column.type
    if isinstance(type_, SyncUUID):
        return type_ if type_.local_storage else SyncUUID(uuid_storage(column))
    if isinstance(type_, TypeDecorator):
        return type_
    if key_kind(type_) == "uuid":
        return SyncUUID(uuid_storage(column))
    if is_key:
        return sa.Text()
    if isinstance(type_, sa.DateTime):
        return UTCDateTime()
    if isinstance(type_, sa.Boolean):
        return SyncBoolean()
    return type_


def _is_now_default(default: Any) -> bool:
    if not isinstance(default, sa.DefaultClause):
        return False
    arg = default.arg
    if isinstance(arg, sa.sql.functions.now | sa.sql.functions.current_timestamp):
        return True
    text = arg.text if isinstance(arg, sa.TextClause) else arg if isinstance(arg, str) else ""
    return text.strip().lower() in {"now()", "current_timestamp"}


def _server_ondelete(raw: str | None, column: str) -> str | None:
    """Keep the action; restrict SET NULL/SET DEFAULT to the FK column (never the scope)."""
    action = normalise_action(raw)
    if action in {"SET NULL", "SET DEFAULT"}:
        return f"{action} ({_PG_PREPARER.quote(column)})"
    return action


def _clone_column(
    column: sa.Column[Any], type_: TypeEngine[Any], *, is_key: bool
) -> sa.Column[Any]:
    extra: list[SchemaItem] = []
    default = column.server_default
    server_default = None
    if isinstance(default, sa.DefaultClause):
        server_default = sa.DefaultClause(default.arg)
    if isinstance(default, sa.Computed):
        extra.append(sa.Computed(default.sqltext, persisted=default.persisted))
    python_default = column.default
    python_onupdate = column.onupdate
    return sa.Column(
        column.name,
        type_,
        *extra,
        key=column.key,
        server_default=server_default,
        nullable=False if is_key else column.nullable,
        default=python_default.arg if isinstance(python_default, sa.ColumnDefault) else None,
        onupdate=python_onupdate.arg if isinstance(python_onupdate, sa.ColumnDefault) else None,
        autoincrement=False if is_key else column.autoincrement,
        comment=column.comment,
    )


def _uniques(table: sa.Table) -> list[sa.UniqueConstraint]:
    found = [c for c in table.constraints if isinstance(c, sa.UniqueConstraint)]
    return sorted(found, key=lambda c: (constraint_name(c) or "", [col.name for col in c.columns]))


def _checks(table: sa.Table) -> list[SchemaItem]:
    found = [
        c for c in table.constraints
        if isinstance(c, sa.CheckConstraint) and isinstance(c.sqltext, sa.TextClause)
    ]
    found.sort(key=lambda c: (constraint_name(c) or "", str(c.sqltext)))
    return [sa.CheckConstraint(sa.text(str(c.sqltext)), name=constraint_name(c)) for c in found]


def _indexes(table: sa.Table) -> list[sa.Index]:
    return sorted(table.indexes, key=lambda i: (constraint_name(i) or "", i.unique))
