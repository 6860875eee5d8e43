"""Read-only helpers that classify declared columns, types and foreign keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator, TypeEngine

from oversync_sa.metadata.types import SyncUUID, UuidStorage

KeyKind = Literal["uuid", "text"]

#: The hidden owner column of every server-side business table (SERVER.md §2.2 check d).
SCOPE_COLUMN = "_sync_scope_id"

#: Key under which a table's sync registration lives in ``Table.info``.
INFO_KEY = "oversync"

#: Referential actions bootstrap accepts (SERVER.md §2.4 check 2), canonical spelling.
ALLOWED_ACTIONS = frozenset({"NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT"})

_COLUMN_LIST = re.compile(r"\s*\(.*\)\s*$", re.DOTALL)


def base_type(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    """The type under any ``TypeDecorator`` layers."""
    while isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    return type_


def key_kind(type_: TypeEngine[Any]) -> KeyKind | None:
    """``uuid``/``text`` when the type can hold a sync key, else ``None``.

    ``Enum`` derives from ``String`` in SQLAlchemy but renders as a PostgreSQL enum type, which
    bootstrap rejects, so it is not a text key.
    """
    inner = base_type(type_)
    if isinstance(inner, sa.Uuid):
        return "uuid"
    if isinstance(inner, sa.String) and not isinstance(inner, sa.Enum):
        return "text"
    return None


def uuid_storage(column: sa.Column[Any]) -> UuidStorage:
    """How a UUID column is stored on SQLite.

    An undecided or generic UUID column follows the client's role rules: a primary-key or FK
    column is a 16-byte BLOB, any other UUID column is text.
    """
    if isinstance(column.type, SyncUUID) and column.type.local_storage is not None:
        return column.type.local_storage
    return "blob" if column.primary_key or column.foreign_keys else "text"


def normalise_action(raw: str | None) -> str | None:
    """Canonical upper-case spelling of a referential action, without a column list.

    Returns ``None`` for "no action given". The PostgreSQL column-list form
    ``SET NULL (col)`` is accepted and reduced to ``SET NULL``; the projections re-derive it.
    """
    if raw is None:
        return None
    text = " ".join(_COLUMN_LIST.sub("", raw).split()).upper()
    return text or None


@dataclass(frozen=True, slots=True)
class ForeignKeyRef:
    """One declared foreign key, reduced to what sync needs.

    ``columns``/``parent_columns`` are parallel; ``parent_table`` is ``None`` when the
    target cannot be resolved within the metadata (a table that is not declared there).
    """

    constraint: sa.ForeignKeyConstraint
    name: str | None
    columns: tuple[str, ...]
    target: str
    parent_table: sa.Table | None
    parent_columns: tuple[str, ...]


def constraint_name(constraint: sa.Constraint | sa.Index) -> str | None:
    """The explicit (or naming-convention) name of a constraint, ``None`` when unnamed."""
    name = constraint.name
    return name if isinstance(name, str) else None


def foreign_keys(table: sa.Table) -> list[ForeignKeyRef]:
    """Every FK constraint of ``table`` in a stable (name, columns) order."""
    refs: list[ForeignKeyRef] = []
    for fk in table.foreign_key_constraints:
        elements = list(fk.elements)
        target = elements[0].target_fullname if elements else ""
        parent: sa.Table | None
        try:
            parent_cols = tuple(el.column.name for el in elements)
            parent = elements[0].column.table if elements else None
            if not isinstance(parent, sa.Table):
                parent = None
        except (sa.exc.NoReferencedTableError, sa.exc.NoReferencedColumnError):
            parent = None
            parent_cols = tuple(el.target_fullname.rsplit(".", 1)[-1] for el in elements)
        refs.append(
            ForeignKeyRef(
                constraint=fk,
                name=constraint_name(fk),
                columns=tuple(el.parent.name for el in elements),
                target=target.rsplit(".", 1)[0] if "." in target else target,
                parent_table=parent,
                parent_columns=parent_cols,
            )
        )
    refs.sort(key=lambda r: (r.name or "", r.columns))
    return refs


def primary_key_columns(table: sa.Table) -> list[sa.Column[Any]]:
    return list(table.primary_key.columns)
