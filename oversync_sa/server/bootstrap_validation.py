"""Bootstrap steps 1 and 3 (SERVER.md §2.2, §2.4): can every registered table be synced?

Facts are loaded once (:func:`load_schema_facts`) and judged by pure functions, so every rule
can be unit-tested on fabricated facts as well as on a real database. Unlike Go, which stops
at the first failing check, :func:`collect_violations` returns *every* violation across all
tables and rules, so one bootstrap run tells the user everything that must change.

Where the facts come from:

* The SQLAlchemy Inspector gives table existence, columns, nullability and FK structure.
* ``information_schema.columns.udt_name`` gives the exact type names Go compares and that the
  runtime keeps for ``bytea`` handling (the Inspector only offers SQLAlchemy type objects).
* ``pg_index`` gives unique indexes as PostgreSQL stores them: ``indkey`` includes ``INCLUDE``
  columns and expression slots, and ``indpred``/``indexprs`` flag partial/expression indexes.
  The Inspector reports neither ``INCLUDE`` order inside the key nor expression slots this way.
* ``pg_constraint`` gives FK deferrability, match type and actions. Reading FKs from the
  catalog (not ``information_schema``) also sees FKs that reference a bare unique index, which
  Go misses (§2.4 "blind spot"); we are deliberately stricter there.

Decision on §11.29: ``_sync_scope_id`` must be ``TEXT NOT NULL`` (Go checks only the type).
A NULL owner would make a row belong to no scope: no actor could read or write it, yet it
would sit in unique indexes. The documented Go schema declares NOT NULL, so this only rejects
schemas that could not be synced correctly anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oversync_sa.errors import SchemaViolation
from oversync_sa.server.config import RegisteredTable

__all__ = [
    "SCOPE_COLUMN",
    "ForeignKeyFact",
    "SchemaFacts",
    "TableFacts",
    "UniqueIndexFact",
    "collect_violations",
    "fk_edges",
    "load_schema_facts",
]

SCOPE_COLUMN: Final = "_sync_scope_id"
_KEY_TYPES: Final = frozenset({"uuid", "text"})
# pg_constraint.confdeltype/confupdtype codes and the information_schema words for them.
_FK_ACTIONS: Final = {
    "a": "NO ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}
_FK_MATCH: Final = {"s": "SIMPLE", "f": "FULL", "p": "PARTIAL"}
_ALLOWED_MATCH: Final = frozenset({"s"})


@dataclass(frozen=True, slots=True)
class UniqueIndexFact:
    """A unique index; ``columns`` follows ``indkey`` ('' marks an expression slot)."""

    name: str
    columns: tuple[str, ...]
    partial: bool
    expression: bool


@dataclass(frozen=True, slots=True)
class ForeignKeyFact:
    """A foreign key whose child is a registered table, with paired column lists."""

    name: str
    child: str
    child_columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    delete_action: str
    update_action: str
    match_type: str
    deferrable: bool


@dataclass(frozen=True, slots=True)
class TableFacts:
    """What the database says about one registered table."""

    columns: Mapping[str, str]
    nullable: Mapping[str, bool]
    unique_indexes: tuple[UniqueIndexFact, ...]
    foreign_keys: tuple[ForeignKeyFact, ...]


@dataclass(frozen=True, slots=True)
class SchemaFacts:
    """Facts per ``"schema.table"``; a registered table absent from ``tables`` does not exist."""

    tables: Mapping[str, TableFacts]


_UDT_QUERY: Final = sa.text(
    "SELECT table_schema || '.' || table_name AS tbl, lower(column_name) AS col,"
    " lower(udt_name) AS udt FROM information_schema.columns"
    " WHERE table_schema || '.' || table_name = ANY(:names)"
)

_UNIQUE_INDEX_QUERY: Final = sa.text(
    """
    SELECT n.nspname || '.' || t.relname AS tbl,
           i.relname AS index_name,
           x.indpred IS NOT NULL AS partial,
           x.indexprs IS NOT NULL AS expression,
           array_agg(coalesce(lower(a.attname), '') ORDER BY k.ord) AS columns
    FROM pg_catalog.pg_index x
    JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
    JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
    LEFT JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) ON true
    LEFT JOIN pg_catalog.pg_attribute a
           ON a.attrelid = t.oid AND a.attnum = k.attnum AND k.attnum > 0
    WHERE x.indisunique AND n.nspname || '.' || t.relname = ANY(:names)
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2
    """
)

_FK_FLAGS_QUERY: Final = sa.text(
    """
    SELECT n.nspname || '.' || t.relname AS tbl, c.conname AS name,
           c.condeferrable AS deferrable, c.confmatchtype::text AS match_type,
           c.confdeltype::text AS delete_action, c.confupdtype::text AS update_action
    FROM pg_catalog.pg_constraint c
    JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
    WHERE c.contype = 'f' AND n.nspname || '.' || t.relname = ANY(:names)
    """
)


def load_schema_facts(conn: Connection, tables: Sequence[RegisteredTable]) -> SchemaFacts:
    """Read the facts for ``tables``; run through ``AsyncConnection.run_sync``."""
    names = [t.name for t in tables]
    inspector = sa.inspect(conn)
    default_schema = inspector.default_schema_name or "public"

    udts: dict[str, dict[str, str]] = {}
    for row in conn.execute(_UDT_QUERY, {"names": names}):
        udts.setdefault(row.tbl, {})[row.col] = row.udt
    indexes: dict[str, list[UniqueIndexFact]] = {}
    for row in conn.execute(_UNIQUE_INDEX_QUERY, {"names": names}):
        indexes.setdefault(row.tbl, []).append(
            UniqueIndexFact(row.index_name, tuple(row.columns), row.partial, row.expression)
        )
    flags = {(r.tbl, r.name): r for r in conn.execute(_FK_FLAGS_QUERY, {"names": names})}

    by_schema: dict[str, list[str]] = {}
    for t in tables:
        by_schema.setdefault(t.schema, []).append(t.table)
    facts: dict[str, TableFacts] = {}
    for schema, table_names in sorted(by_schema.items()):
        present = set(inspector.get_table_names(schema=schema))
        wanted = [name for name in table_names if name in present]
        if not wanted:
            continue
        columns = inspector.get_multi_columns(schema=schema, filter_names=wanted)
        fks = inspector.get_multi_foreign_keys(schema=schema, filter_names=wanted)
        for table in wanted:
            key = f"{schema}.{table}"
            cols = columns.get((schema, table), [])
            foreign_keys: list[ForeignKeyFact] = []
            for fk in fks.get((schema, table), []):
                fk_name = fk["name"] or ""
                flag = flags.get((key, fk_name))
                parent_schema = fk["referred_schema"] or default_schema
                foreign_keys.append(
                    ForeignKeyFact(
                        name=fk_name,
                        child=key,
                        child_columns=tuple(c.lower() for c in fk["constrained_columns"]),
                        parent=f"{parent_schema}.{fk['referred_table']}".lower(),
                        parent_columns=tuple(c.lower() for c in fk["referred_columns"]),
                        delete_action=flag.delete_action if flag else "a",
                        update_action=flag.update_action if flag else "a",
                        match_type=flag.match_type if flag else "s",
                        deferrable=bool(flag.deferrable) if flag else False,
                    )
                )
            facts[key] = TableFacts(
                columns=udts.get(key, {}),
                nullable={c["name"].lower(): bool(c["nullable"]) for c in cols},
                unique_indexes=tuple(indexes.get(key, [])),
                foreign_keys=tuple(sorted(foreign_keys, key=lambda f: f.name)),
            )
    return SchemaFacts(tables=facts)


def _check_table(table: RegisteredTable, facts: TableFacts) -> Iterable[SchemaViolation]:
    name, key = table.name, table.sync_key_column

    def violation(rule: str, message: str, constraint: str | None = None) -> SchemaViolation:
        return SchemaViolation(table=name, rule=rule, message=message, constraint=constraint)

    scope_type = facts.columns.get(SCOPE_COLUMN)
    if scope_type != "text":
        found = "missing" if scope_type is None else f"of type {scope_type}"
        yield violation(
            "scope_column", f"must define {SCOPE_COLUMN} TEXT NOT NULL ({SCOPE_COLUMN} is {found})"
        )
    elif facts.nullable.get(SCOPE_COLUMN, True):
        yield violation(
            "scope_not_null",
            f"must define {SCOPE_COLUMN} TEXT NOT NULL ({SCOPE_COLUMN} is nullable)",
        )

    key_type = facts.columns.get(key)
    if key_type is None:
        yield violation(
            "key_column", f"sync key column {key} does not exist (allows only uuid and text)"
        )
    elif key_type not in _KEY_TYPES:
        yield violation(
            "key_column_type",
            f"sync key column {key} has type {key_type}; allows only uuid and text",
        )

    if not facts.unique_indexes:
        yield violation("unique_indexes", "must provide unique indexes or constraints")
        return
    for index in facts.unique_indexes:
        if index.partial or index.expression:
            kind = "partial" if index.partial else "expression"
            yield violation(
                "unique_index_shape",
                f"{kind} unique index {index.name} is not supported "
                "(partial or expression unique index)",
                index.name,
            )
            continue
        if not index.columns:
            yield violation(
                "unique_index_columns",
                f"unique index {index.name} without column entries",
                index.name,
            )
        elif index.columns[0] != SCOPE_COLUMN:
            yield violation(
                "unique_index_scope",
                f"unique index {index.name} on ({', '.join(index.columns)}) "
                f"does not begin with {SCOPE_COLUMN}",
                index.name,
            )
    identity = (SCOPE_COLUMN, key)
    if not any(
        i.columns == identity and not (i.partial or i.expression) for i in facts.unique_indexes
    ):
        yield violation(
            "unique_identity", f"must provide unique identity ({SCOPE_COLUMN}, {key})"
        )


def _check_foreign_key(
    fk: ForeignKeyFact, registered: Mapping[str, RegisteredTable]
) -> Iterable[SchemaViolation]:
    def violation(rule: str, message: str) -> SchemaViolation:
        return SchemaViolation(table=fk.child, rule=rule, message=message, constraint=fk.name)

    parent = registered.get(fk.parent)
    if parent is None:
        yield violation(
            "fk_closure",
            f"registered tables are not FK-closed: {fk.child} -> {fk.parent} ({fk.name}); "
            f"register {fk.parent} or drop the constraint",
        )
    for label, code in (("ON DELETE", fk.delete_action), ("ON UPDATE", fk.update_action)):
        if code not in _FK_ACTIONS:
            yield violation("fk_action", f"unsupported {label} action {code!r} on {fk.name}")
    if fk.match_type not in _ALLOWED_MATCH:
        match = _FK_MATCH.get(fk.match_type, fk.match_type)
        yield violation(
            "fk_match", f"unsupported MATCH {match} on {fk.name}; only MATCH SIMPLE is allowed"
        )
    if parent is not None and not (
        len(fk.child_columns) == 2
        and fk.child_columns[0] == SCOPE_COLUMN
        and fk.parent_columns == (SCOPE_COLUMN, parent.sync_key_column)
    ):
        yield violation(
            "fk_scope_inclusive",
            f"FK {fk.child} -> {fk.parent} ({fk.name}) must be scope-inclusive: "
            f"({SCOPE_COLUMN}, <column>) REFERENCES {fk.parent}"
            f"({SCOPE_COLUMN}, {parent.sync_key_column})",
        )
    if not fk.deferrable:
        yield violation(
            "fk_deferrable",
            f"non-deferrable FK constraints: {fk.name}; make these constraints DEFERRABLE "
            "before bootstrap",
        )


def collect_violations(
    tables: Sequence[RegisteredTable], facts: SchemaFacts
) -> list[SchemaViolation]:
    """Every rule of §2.2/§2.4 for every table, in configuration order then rule order."""
    registered = {t.name: t for t in tables}
    violations: list[SchemaViolation] = []
    for table in tables:
        table_facts = facts.tables.get(table.name)
        if table_facts is None:
            violations.append(
                SchemaViolation(
                    table=table.name,
                    rule="table_missing",
                    message="could not load column metadata: table does not exist",
                )
            )
            continue
        violations.extend(_check_table(table, table_facts))
        for fk in table_facts.foreign_keys:
            violations.extend(_check_foreign_key(fk, registered))
    return violations


def fk_edges(facts: SchemaFacts) -> dict[str, list[str]]:
    """Child → parents edges for dependency ordering (unregistered parents are dropped later)."""
    return {
        name: [fk.parent for fk in table.foreign_keys] for name, table in facts.tables.items()
    }
