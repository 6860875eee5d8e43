"""Marking a table as synced: the record kept in ``Table.info["oversync"]``.

ORM models get marked by :class:`~oversync_sa.metadata.SyncedBase` when they are declared;
Core users call :func:`sync_table`. Either way the mark is a frozen
:class:`SyncRegistration`, the one place later code (projections, Alembic, the client and
server runtimes) reads to learn that a table is synced and how.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from oversync_sa.errors import UnsupportedSchemaError
from oversync_sa.metadata._inspect import INFO_KEY
from oversync_sa.metadata._rules import table_violations
from oversync_sa.metadata.types import SyncUUID

__all__ = ["SyncOptions", "SyncRegistration", "registration_of", "sync_table"]


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """Per-table sync behaviour, declared as ``__sync_options__`` on a model.

    ``download_only``: the table is pulled from the server but local changes to it are never
    pushed (e.g. reference data the server owns).
    """

    download_only: bool = False


@dataclass(frozen=True, slots=True)
class SyncRegistration:
    """What ``Table.info["oversync"]`` holds for a synced table.

    ``model`` names the ORM class the table was declared by (``None`` for Core tables); it is
    used in error messages only.
    """

    key_column: str
    options: SyncOptions = SyncOptions()
    model: str | None = None

    @property
    def download_only(self) -> bool:
        return self.options.download_only


def registration_of(table: sa.Table) -> SyncRegistration | None:
    """The sync registration of ``table``, or ``None`` when it is not synced."""
    found = table.info.get(INFO_KEY)
    return found if isinstance(found, SyncRegistration) else None


def sync_table(
    table: sa.Table,
    *,
    key: str | None = None,
    options: SyncOptions | None = None,
    model: str | None = None,
) -> sa.Table:
    """Mark a Core ``table`` as synced and return it.

    ``key`` defaults to the table's primary-key column and, when given, must name it. Raises
    :class:`UnsupportedSchemaError` listing every rule the table breaks on its own; rules that
    involve other tables (FK targets) are checked by :func:`~oversync_sa.metadata.sync_registry`.
    """
    _register(table, key=key, options=options or SyncOptions(), model=model, orm=False)
    return table


def _register(
    table: sa.Table, *, key: str | None, options: SyncOptions, model: str | None, orm: bool
) -> SyncRegistration:
    violations = table_violations(table, key, model, orm=orm)
    if violations:
        raise UnsupportedSchemaError(violations)
    key_column = next(iter(table.primary_key.columns)).name
    _decide_uuid_storage(table)
    registration = SyncRegistration(key_column=key_column, options=options, model=model)
    table.info[INFO_KEY] = registration
    return registration


def _decide_uuid_storage(table: sa.Table) -> None:
    """Fix the SQLite storage of undecided ``SyncUUID`` columns by their role.

    The decision must be made before any statement binds values, and the role (key, FK) is
    known only once the table exists, so it happens at registration: the column's type is
    replaced by a decided copy (types are shared between columns; they are never mutated).
    An FK column declared before its parent receives the parent key's type only when the
    parent table appears, so every registration revisits the other synced tables too.
    """
    for candidate in table.metadata.tables.values():
        if candidate is not table and registration_of(candidate) is None:
            continue
        for column in candidate.columns:
            type_ = column.type
            if isinstance(type_, SyncUUID) and type_.local_storage is None:
                storage: Any = "blob" if column.primary_key or column.foreign_keys else "text"
                column.type = SyncUUID(storage)
