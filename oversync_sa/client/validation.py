"""Construction-time validation of the managed SQLite tables (CLIENT.md §1.2 steps 4-7).

The checks read the live database (``pragma_table_info`` / ``pragma_foreign_key_list``), so
hand-written schemas get the same guarantees as generated ones. Unlike Go, which stops at the
first problem, every violation is collected and raised together as one
:class:`~oversync_sa.errors.UnsupportedSchemaError`, so one run tells the user everything to fix.

Deliberate differences from Go (all stricter or more helpful, none visible on the wire):

* the sync key must be the table's *only* primary-key column (§12.46);
* a missing table is reported as ``table_missing`` rather than as a missing key column;
* ``REFERENCES parent`` without a column (``to`` is NULL) means the parent's primary key (§12.35);
* names starting with ``_sync_`` or ``sqlite_`` are reserved for metadata and rejected.

Violation ``table`` fields hold the local (lower-cased) table name; ``rule`` is one of the
``RULE_*`` constants.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client.config import ClientConfig, SyncTable
from oversync_sa.client.local_schema import fetch_all
from oversync_sa.errors import SchemaViolation, UnsupportedSchemaError

__all__ = [
    "RULE_FK_COMPOSITE",
    "RULE_FK_NOT_CLOSED",
    "RULE_KEY_COLUMN_MISSING",
    "RULE_KEY_COMPOSITE",
    "RULE_KEY_MISSING",
    "RULE_KEY_NOT_PRIMARY_KEY",
    "RULE_KEY_NOT_SOLE_PRIMARY_KEY",
    "RULE_KEY_TYPE",
    "RULE_SCHEMA_SCOPE",
    "RULE_TABLE_DUPLICATE",
    "RULE_TABLE_MISSING",
    "RULE_TABLE_NAME_EMPTY",
    "RULE_TABLE_NAME_QUALIFIED",
    "RULE_TABLE_NAME_RESERVED",
    "ColumnInfo",
    "ForeignKeyInfo",
    "KeyKind",
    "ManagedSchema",
    "TableInfo",
    "check_schema_scope",
    "dependency_order",
    "validate_managed_tables",
]

RULE_SCHEMA_SCOPE: Final = "schema_scope"
RULE_TABLE_NAME_EMPTY: Final = "table_name_empty"
RULE_TABLE_NAME_QUALIFIED: Final = "table_name_qualified"
RULE_TABLE_NAME_RESERVED: Final = "table_name_reserved"
RULE_TABLE_DUPLICATE: Final = "table_duplicate"
RULE_KEY_MISSING: Final = "sync_key_missing"
RULE_KEY_COMPOSITE: Final = "sync_key_composite"
RULE_TABLE_MISSING: Final = "table_missing"
RULE_KEY_COLUMN_MISSING: Final = "sync_key_column_missing"
RULE_KEY_NOT_PRIMARY_KEY: Final = "sync_key_not_primary_key"
RULE_KEY_NOT_SOLE_PRIMARY_KEY: Final = "sync_key_not_sole_primary_key"
RULE_KEY_TYPE: Final = "sync_key_type"
RULE_FK_COMPOSITE: Final = "fk_composite"
RULE_FK_NOT_CLOSED: Final = "fk_not_closed"

_RESERVED_PREFIXES: Final = ("_sync_", "sqlite_")

# Every metadata table that records a schema name (§1.2 step 4).
_SCHEMA_SCOPE_SQL: Final = " UNION ".join(
    f"SELECT schema_name FROM {table} WHERE trim(schema_name) <> ''"
    for table in (
        "_sync_attachment_state",
        "_sync_row_state",
        "_sync_dirty_rows",
        "_sync_snapshot_stage",
        "_sync_outbox_rows",
        "_sync_push_stage",
    )
)


class KeyKind(StrEnum):
    """How a table's sync key is stored locally (and hence encoded, §3.4-3.5)."""

    TEXT = "text"
    #: A BLOB holding a 16-byte UUID: lowercase hex locally, dashed UUID on the wire.
    UUID_BLOB = "uuid_blob"


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """One column as SQLite reports it; ``name`` keeps the declared spelling."""

    name: str
    declared_type: str
    pk_position: int = 0

    @property
    def json_name(self) -> str:
        """The member name of this column in payloads: the name lower-cased."""
        return self.name.lower()

    @property
    def is_blob(self) -> bool:
        """Declared type contains ``blob`` (case-insensitive): hex locally, encoded on the wire."""
        return "blob" in self.declared_type.lower()


@dataclass(frozen=True, slots=True)
class ForeignKeyInfo:
    """A single-column foreign key; ``to_column`` is ``None`` for ``REFERENCES parent``."""

    from_column: str
    ref_table: str
    to_column: str | None


@dataclass(frozen=True, slots=True)
class TableInfo:
    """Everything the encoders and triggers need to know about one managed table.

    ``name`` is lower-cased; ``key_column`` keeps the spelling declared in the table. Derived
    sets hold lower-cased column names, the form used as payload members.
    """

    name: str
    columns: tuple[ColumnInfo, ...]
    key_column: str
    key_kind: KeyKind
    foreign_keys: tuple[ForeignKeyInfo, ...] = ()
    download_only: bool = False
    blob_columns: frozenset[str] = field(init=False, repr=False)
    fk_columns: frozenset[str] = field(init=False, repr=False)
    uuid_columns: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        blobs = frozenset(c.json_name for c in self.columns if c.is_blob)
        fks = frozenset(fk.from_column.lower() for fk in self.foreign_keys)
        uuids = blobs & (fks | {self.key_column.lower()})
        object.__setattr__(self, "blob_columns", blobs)
        object.__setattr__(self, "fk_columns", fks)
        object.__setattr__(self, "uuid_columns", uuids)

    @property
    def key_json_name(self) -> str:
        """The member name of the key in ``key_json`` and wire keys (lower-cased)."""
        return self.key_column.lower()

    @property
    def column_names(self) -> tuple[str, ...]:
        """Declared column names in ``table_info`` order."""
        return tuple(c.name for c in self.columns)

    @property
    def blob_key(self) -> bool:
        return self.key_kind is KeyKind.UUID_BLOB

    def is_uuid_reference(self, column: str) -> bool:
        """True for a BLOB column that is the "from" side of a foreign key (a UUID on the wire)."""
        lowered = column.lower()
        return lowered in self.blob_columns and lowered in self.fk_columns


@dataclass(frozen=True, slots=True)
class ManagedSchema:
    """The validated managed tables of one client, in configuration order.

    ``order`` maps each table name to its dependency position (§1.2 step 7): parents first,
    FK cycles in configuration order after everything else.
    """

    schema: str
    tables: tuple[TableInfo, ...]
    order: Mapping[str, int]

    def table(self, name: str) -> TableInfo:
        """The table called ``name`` (case-insensitive); ``KeyError`` when it is not managed."""
        wanted = name.strip().lower()
        for info in self.tables:
            if info.name == wanted:
                return info
        raise KeyError(name)


async def check_schema_scope(conn: AsyncConnection, schema: str) -> list[SchemaViolation]:
    """Violations when existing sync state belongs to another server schema (§1.2 step 4).

    One local database holds state for exactly one schema; the metadata tables must exist.
    """
    rows = await fetch_all(conn, _SCHEMA_SCOPE_SQL)
    found = sorted({str(row[0]) for row in rows})
    if not found or found == [schema]:
        return []
    return [
        SchemaViolation(
            table="",
            rule=RULE_SCHEMA_SCOPE,
            message=(
                "oversqlite supports exactly one configured schema per local database; existing"
                f" sync state uses schema(s) {', '.join(found)} while config.Schema={schema}"
            ),
        )
    ]


async def validate_managed_tables(conn: AsyncConnection, config: ClientConfig) -> ManagedSchema:
    """Validate every configured table against the live database; steps 4-7 of §1.2.

    Needs the metadata tables (run
    :func:`~oversync_sa.client.local_schema.initialize_database` first). Raises
    :class:`~oversync_sa.errors.UnsupportedSchemaError` listing every violation.
    """
    violations = await check_schema_scope(conn, config.schema)
    candidates = _check_names(config.tables, violations)

    introspected: list[_Introspected] = []
    for table, key_column in candidates:
        found = await _introspect(conn, table, key_column, violations)
        if found is not None:
            introspected.append(found)

    # A configured table whose own shape is invalid still counts as managed for FK closure, so
    # its children are not reported twice.
    violations.extend(_check_foreign_keys(introspected, {t.name for t, _key in candidates}))
    if violations:
        raise UnsupportedSchemaError(violations)

    managed = tuple(t.info for t in introspected if t.info is not None)
    return ManagedSchema(
        schema=config.schema,
        tables=managed,
        order=MappingProxyType(dependency_order(managed)),
    )


def _check_names(
    tables: Sequence[SyncTable], violations: list[SchemaViolation]
) -> list[tuple[SyncTable, str]]:
    """Name and key-declaration rules; returns the tables worth introspecting."""
    seen: set[str] = set()
    accepted: list[tuple[SyncTable, str]] = []
    for position, table in enumerate(tables):
        name = table.name
        label = name or f"tables[{position}]"

        def fail(rule: str, message: str, label: str = label) -> None:
            violations.append(SchemaViolation(table=label, rule=rule, message=message))

        if not name:
            fail(RULE_TABLE_NAME_EMPTY, "table name must not be empty")
            continue
        if "." in name:
            fail(
                RULE_TABLE_NAME_QUALIFIED,
                f"table name {table.table_name!r} must not be schema-qualified",
            )
            continue
        if name.startswith(_RESERVED_PREFIXES):
            fail(RULE_TABLE_NAME_RESERVED, f"table name prefix of {name!r} is reserved")
            continue
        if name in seen:
            fail(RULE_TABLE_DUPLICATE, f"table {name!r} is registered more than once")
            continue
        seen.add(name)
        keys = table.key_columns
        if not keys:
            fail(RULE_KEY_MISSING, "must declare sync_key_column or sync_key_columns explicitly")
            continue
        if len(keys) != 1:
            fail(
                RULE_KEY_COMPOSITE,
                f"must declare exactly one sync key column in the current client runtime,"
                f" got {', '.join(keys)}",
            )
            continue
        accepted.append((table, keys[0]))
    return accepted


@dataclass(frozen=True, slots=True)
class _Introspected:
    """One existing table: its foreign keys always, its TableInfo only when its key is valid."""

    name: str
    foreign_keys: tuple[ForeignKeyInfo, ...]
    # Composite FKs are rejected, so they stay out of TableInfo and travel beside it.
    composite_refs: tuple[str, ...]
    info: TableInfo | None


async def _introspect(
    conn: AsyncConnection, table: SyncTable, key_column: str, violations: list[SchemaViolation]
) -> _Introspected | None:
    name = table.name
    column_rows = await fetch_all(
        conn, "SELECT name, type, pk FROM pragma_table_info(?) ORDER BY cid", (name,)
    )
    columns = tuple(
        ColumnInfo(name=str(row[0]), declared_type=str(row[1] or ""), pk_position=int(row[2]))
        for row in column_rows
    )
    if not columns:
        violations.append(
            SchemaViolation(
                table=name,
                rule=RULE_TABLE_MISSING,
                message=f"table {name!r} does not exist in the local database",
            )
        )
        return None

    fk_rows = await fetch_all(
        conn,
        'SELECT id, seq, "table", "from", "to" FROM pragma_foreign_key_list(?) ORDER BY id, seq',
        (name,),
    )
    fks = [
        (int(r[0]), int(r[1]), str(r[2]).lower(), str(r[3]), None if r[4] is None else str(r[4]))
        for r in fk_rows
    ]
    composite_ids = {fk_id for fk_id, seq, _ref, _src, _dst in fks if seq > 0}
    foreign_keys = tuple(
        ForeignKeyInfo(from_column=src, ref_table=ref, to_column=dst)
        for fk_id, _seq, ref, src, dst in fks
        if fk_id not in composite_ids
    )
    composite_refs = tuple(
        sorted({ref for fk_id, _seq, ref, _src, _dst in fks if fk_id in composite_ids})
    )

    key_problems = _key_violations(name, columns, key_column)
    violations.extend(key_problems)
    info = None
    if not key_problems:
        key = next(c for c in columns if c.name.lower() == key_column.lower())
        info = TableInfo(
            name=name,
            columns=columns,
            key_column=key.name,
            key_kind=KeyKind.UUID_BLOB if "blob" in key.declared_type.lower() else KeyKind.TEXT,
            foreign_keys=foreign_keys,
            download_only=table.download_only,
        )
    return _Introspected(name, foreign_keys, composite_refs, info)


def _key_violations(
    table: str, columns: Sequence[ColumnInfo], key_column: str
) -> list[SchemaViolation]:
    """The sync-key rules of §1.2 step 5, stricter than Go on composite primary keys."""

    def violation(rule: str, message: str) -> SchemaViolation:
        return SchemaViolation(table=table, rule=rule, message=message)

    key = next((c for c in columns if c.name.lower() == key_column.lower()), None)
    if key is None:
        return [
            violation(
                RULE_KEY_COLUMN_MISSING,
                f"table {table!r} does not contain configured primary key column {key_column!r}",
            )
        ]
    found: list[SchemaViolation] = []
    if key.pk_position == 0:
        found.append(
            violation(
                RULE_KEY_NOT_PRIMARY_KEY,
                f"sync key column {key.name!r} is not declared as PRIMARY KEY",
            )
        )
    others = [c.name for c in columns if c.pk_position > 0 and c is not key]
    if others:
        found.append(
            violation(
                RULE_KEY_NOT_SOLE_PRIMARY_KEY,
                f"sync key column {key.name!r} must be the only PRIMARY KEY column;"
                f" the primary key also contains {', '.join(others)}",
            )
        )
    declared = key.declared_type.lower()
    if "blob" not in declared and "text" not in declared:
        found.append(
            violation(
                RULE_KEY_TYPE,
                f"sync key column {key.name!r} has type {key.declared_type or '(none)'!r};"
                " oversqlite supports only TEXT keys and UUID-backed BLOB keys",
            )
        )
    return found


def _check_foreign_keys(
    tables: Sequence[_Introspected], managed: set[str]
) -> list[SchemaViolation]:
    """FK closure over the managed set (§1.2 step 6); violations sorted."""
    found: list[SchemaViolation] = []
    for table in tables:
        for ref in table.composite_refs:
            found.append(
                SchemaViolation(
                    table=table.name,
                    rule=RULE_FK_COMPOSITE,
                    message=(
                        "managed tables contain unsupported composite foreign keys:"
                        f" {table.name} -> {ref}"
                    ),
                )
            )
        for fk in table.foreign_keys:
            if fk.ref_table not in managed:
                target = fk.to_column if fk.to_column is not None else "(primary key)"
                found.append(
                    SchemaViolation(
                        table=table.name,
                        rule=RULE_FK_NOT_CLOSED,
                        message=(
                            "managed tables are not FK-closed:"
                            f" {table.name}.{fk.from_column} -> {fk.ref_table}.{target}"
                        ),
                    )
                )
    return sorted(found, key=lambda v: (v.rule, v.message))


def dependency_order(tables: Iterable[TableInfo]) -> dict[str, int]:
    """Parents-first position of every table (§1.2 step 7).

    Kahn's algorithm where the ready set is always taken in configuration order; tables left on
    FK cycles follow in configuration order. Self-references and FKs to unmanaged tables are not
    edges.
    """
    ordered = list(tables)
    position = {info.name: i for i, info in enumerate(ordered)}
    children: dict[str, set[str]] = {info.name: set() for info in ordered}
    in_degree = dict.fromkeys(position, 0)
    for info in ordered:
        parents = {
            fk.ref_table
            for fk in info.foreign_keys
            if fk.ref_table != info.name and fk.ref_table in position
        }
        for parent in parents:
            children[parent].add(info.name)
            in_degree[info.name] += 1

    # "Pop the front, then re-sort the queue by config position" is exactly a min-heap.
    ready = [position[name] for name, degree in in_degree.items() if degree == 0]
    heapq.heapify(ready)
    result: list[str] = []
    while ready:
        name = ordered[heapq.heappop(ready)].name
        result.append(name)
        for child in children[name]:
            in_degree[child] -= 1
            if in_degree[child] == 0:
                heapq.heappush(ready, position[child])
    placed = set(result)
    result.extend(info.name for info in ordered if info.name not in placed)
    return {name: index for index, name in enumerate(result)}
