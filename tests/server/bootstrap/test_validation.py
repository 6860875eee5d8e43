"""Bootstrap step 1/3 rules (SERVER.md §2.2, §2.4): a passing and a failing shape for each."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import SchemaViolation, UnsupportedSchemaError
from oversync_sa.server import RegisteredTable, ServiceConfig, SyncService
from oversync_sa.server.bootstrap_validation import (
    ForeignKeyFact,
    SchemaFacts,
    TableFacts,
    UniqueIndexFact,
    collect_violations,
)
from tests.server.bootstrap.conftest import run_ddl

GOOD_PARENT = """CREATE TABLE b.p (_sync_scope_id TEXT NOT NULL, id UUID NOT NULL,
    PRIMARY KEY (_sync_scope_id, id))"""


async def _violations(
    engine: AsyncEngine, ddl: list[str], tables: list[tuple[str, str]]
) -> list[SchemaViolation]:
    await run_ddl(engine, ["CREATE SCHEMA b", *ddl])
    config = ServiceConfig(registered_tables=tuple(RegisteredTable("b", t, k) for t, k in tables))
    try:
        await SyncService(engine, config).bootstrap()
    except UnsupportedSchemaError as exc:
        return list(exc.violations)
    return []


def _rules(violations: list[SchemaViolation]) -> list[tuple[str, str, str | None]]:
    return [(v.table, v.rule, v.constraint) for v in violations]


CHILD = "CREATE TABLE b.c (_sync_scope_id TEXT NOT NULL, id UUID NOT NULL, pid UUID, {extra})"
CHILD_PK = "PRIMARY KEY (_sync_scope_id, id)"

CASES: list[tuple[str, list[str], list[tuple[str, str]], list[tuple[str, str, str | None]]]] = [
    ("good", [GOOD_PARENT], [("p", "id")], []),
    (
        "text key and alternate identity",
        [
            "CREATE TABLE b.t (_sync_scope_id TEXT NOT NULL, pk BIGINT NOT NULL, ext TEXT NOT NULL,"
            " PRIMARY KEY (_sync_scope_id, pk), UNIQUE (_sync_scope_id, ext))"
        ],
        [("t", "ext")],
        [],
    ),
    ("missing table", [], [("nope", "id")], [("b.nope", "table_missing", None)]),
    (
        "scope column missing",
        ["CREATE TABLE b.t (id UUID PRIMARY KEY)"],
        [("t", "id")],
        [
            ("b.t", "scope_column", None),
            ("b.t", "unique_index_scope", "t_pkey"),
            ("b.t", "unique_identity", None),
        ],
    ),
    (
        "scope column varchar",
        [
            "CREATE TABLE b.t (_sync_scope_id VARCHAR NOT NULL, id UUID,"
            " PRIMARY KEY (_sync_scope_id, id))"
        ],
        [("t", "id")],
        [("b.t", "scope_column", None)],
    ),
    (
        "scope column nullable",
        [
            "CREATE TABLE b.t (_sync_scope_id TEXT, id UUID NOT NULL,"
            " CONSTRAINT t_ident UNIQUE (_sync_scope_id, id))"
        ],
        [("t", "id")],
        [("b.t", "scope_not_null", None)],
    ),
    (
        "key column type",
        [
            "CREATE TABLE b.t (_sync_scope_id TEXT NOT NULL, id BIGINT,"
            " PRIMARY KEY (_sync_scope_id, id))"
        ],
        [("t", "id")],
        [("b.t", "key_column_type", None)],
    ),
    (
        "key column missing",
        [GOOD_PARENT],
        [("p", "other")],
        [("b.p", "key_column", None), ("b.p", "unique_identity", None)],
    ),
    (
        "no unique index",
        ["CREATE TABLE b.t (_sync_scope_id TEXT NOT NULL, id UUID)"],
        [("t", "id")],
        [("b.t", "unique_indexes", None)],
    ),
    (
        "partial and expression unique indexes",
        [
            GOOD_PARENT,
            "CREATE UNIQUE INDEX p_part ON b.p (_sync_scope_id, id) WHERE id IS NOT NULL",
            "CREATE UNIQUE INDEX p_expr ON b.p (_sync_scope_id, lower(id::text))",
        ],
        [("p", "id")],
        [("b.p", "unique_index_shape", "p_expr"), ("b.p", "unique_index_shape", "p_part")],
    ),
    (
        "unique index without scope prefix",
        [GOOD_PARENT, "CREATE UNIQUE INDEX p_id ON b.p (id)"],
        [("p", "id")],
        [("b.p", "unique_index_scope", "p_id")],
    ),
    (
        "covering index is not the identity",
        [
            "CREATE TABLE b.t (_sync_scope_id TEXT NOT NULL, id UUID NOT NULL, x INT,"
            " CONSTRAINT t_cov UNIQUE (_sync_scope_id, id) INCLUDE (x))"
        ],
        [("t", "id")],
        [("b.t", "unique_identity", None)],
    ),
    (
        "good scope-inclusive deferrable FK",
        [
            GOOD_PARENT,
            CHILD.format(
                extra=CHILD_PK + ", CONSTRAINT c_fk FOREIGN KEY (_sync_scope_id, pid)"
                " REFERENCES b.p (_sync_scope_id, id) ON DELETE CASCADE DEFERRABLE"
            ),
        ],
        [("p", "id"), ("c", "id")],
        [],
    ),
    (
        "FK not closed",
        [
            GOOD_PARENT,
            CHILD.format(
                extra=CHILD_PK + ", CONSTRAINT c_fk FOREIGN KEY (_sync_scope_id, pid)"
                " REFERENCES b.p (_sync_scope_id, id) DEFERRABLE"
            ),
        ],
        [("c", "id")],
        [("b.c", "fk_closure", "c_fk")],
    ),
    (
        "extra scope-prefixed unique index is fine",
        [
            GOOD_PARENT.replace("))", "), name TEXT)"),
            "CREATE UNIQUE INDEX p_name ON b.p (_sync_scope_id, name)",
        ],
        [("p", "id")],
        [],
    ),
    (
        "MATCH FULL, single column FK, non-deferrable",
        [
            GOOD_PARENT,
            "CREATE UNIQUE INDEX p_bare ON b.p (id)",
            CHILD.format(
                extra=CHILD_PK + ", CONSTRAINT c_full FOREIGN KEY (_sync_scope_id, pid)"
                " REFERENCES b.p (_sync_scope_id, id) MATCH FULL DEFERRABLE,"
                " CONSTRAINT c_single FOREIGN KEY (pid) REFERENCES b.p (id)"
            ),
        ],
        [("p", "id"), ("c", "id")],
        [
            ("b.p", "unique_index_scope", "p_bare"),
            ("b.c", "fk_match", "c_full"),
            ("b.c", "fk_scope_inclusive", "c_single"),
            ("b.c", "fk_deferrable", "c_single"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("ddl", "tables", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_rule(
    pg_engine: AsyncEngine,
    ddl: list[str],
    tables: list[tuple[str, str]],
    expected: list[tuple[str, str, str | None]],
) -> None:
    assert _rules(await _violations(pg_engine, ddl, tables)) == expected


async def test_messages_mention_go_phrases(pg_engine: AsyncEngine) -> None:
    violations = await _violations(
        pg_engine,
        [
            "CREATE TABLE b.t (id BIGINT)",
            "CREATE TABLE b.u (_sync_scope_id TEXT NOT NULL, id UUID, x INT,"
            " CONSTRAINT u_x UNIQUE (x), CONSTRAINT u_fk FOREIGN KEY (x) REFERENCES b.u (x))",
        ],
        [("t", "id"), ("u", "id"), ("gone", "id")],
    )
    text = "\n".join(str(v) for v in violations)
    for phrase in (
        "must define _sync_scope_id TEXT",
        "allows only uuid and text",
        "must provide unique indexes or constraints",
        "does not begin with _sync_scope_id",
        "must provide unique identity (_sync_scope_id, id)",
        "scope-inclusive",
        "non-deferrable FK constraints",
        "make these constraints DEFERRABLE before bootstrap",
        "could not load column metadata",
    ):
        assert phrase in text
    # one error lists every problem across all tables, in configuration order
    assert [v.table for v in violations] == sorted(
        (v.table for v in violations), key=["b.t", "b.u", "b.gone"].index
    )
    assert len(violations) == 8


async def test_no_layout_is_created_when_validation_fails(pg_engine: AsyncEngine) -> None:
    await _violations(pg_engine, [], [("nope", "id")])
    async with pg_engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT to_regnamespace('sync')"))).scalar() is None


def _fk(**changes: object) -> ForeignKeyFact:
    base: dict[str, object] = {
        "name": "fk",
        "child": "b.c",
        "child_columns": ("_sync_scope_id", "pid"),
        "parent": "b.p",
        "parent_columns": ("_sync_scope_id", "id"),
        "delete_action": "a",
        "update_action": "a",
        "match_type": "s",
        "deferrable": True,
    }
    base.update(changes)
    return ForeignKeyFact(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fk", "rules"),
    [
        (_fk(), []),
        (_fk(delete_action="c", update_action="n"), []),
        (_fk(delete_action="x"), ["fk_action"]),
        (_fk(update_action="?"), ["fk_action"]),
        (_fk(match_type="p"), ["fk_match"]),
        (_fk(parent_columns=("_sync_scope_id", "other")), ["fk_scope_inclusive"]),
        (_fk(child_columns=("pid", "_sync_scope_id")), ["fk_scope_inclusive"]),
    ],
)
def test_foreign_key_rules_on_facts(fk: ForeignKeyFact, rules: list[str]) -> None:
    table = TableFacts(
        columns={"_sync_scope_id": "text", "id": "uuid"},
        nullable={"_sync_scope_id": False, "id": False},
        unique_indexes=(UniqueIndexFact("pk", ("_sync_scope_id", "id"), False, False),),
        foreign_keys=(fk,),
    )
    facts = SchemaFacts(
        tables={
            "b.c": table,
            "b.p": TableFacts(table.columns, table.nullable, table.unique_indexes, ()),
        }
    )
    tables = [RegisteredTable("b", "c", "id"), RegisteredTable("b", "p", "id")]
    assert [v.rule for v in collect_violations(tables, facts)] == rules


def test_unique_index_without_columns_on_facts() -> None:
    table = TableFacts(
        columns={"_sync_scope_id": "text", "id": "uuid"},
        nullable={"_sync_scope_id": False},
        unique_indexes=(UniqueIndexFact("empty", (), False, False),),
        foreign_keys=(),
    )
    violations = collect_violations([RegisteredTable("b", "t", "id")], SchemaFacts({"b.t": table}))
    assert [v.rule for v in violations] == ["unique_index_columns", "unique_identity"]
    assert "without column entries" in violations[0].message
