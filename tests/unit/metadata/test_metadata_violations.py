"""Every unsupported shape fails with a violation naming the model/table and the rule."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from oversync_sa.errors import UnsupportedSchemaError
from oversync_sa.metadata import SyncedBase, SyncUUID, server_projection, sync_registry, sync_table


def _rules(err: pytest.ExceptionInfo[UnsupportedSchemaError]) -> list[tuple[str, str]]:
    return [(v.table, v.rule) for v in err.value.violations]


def _declare_fails(declare: Callable[[type[SyncedBase]], object]) -> UnsupportedSchemaError:
    class Base(SyncedBase):
        pass

    with pytest.raises(UnsupportedSchemaError) as err:
        declare(Base)
    return err.value


def _only(err: UnsupportedSchemaError, table: str, rule: str, model: str | None) -> None:
    assert [(v.table, v.rule) for v in err.violations] == [(table, rule)]
    if model:
        assert model in str(err.violations[0])
    assert rule in str(err)


def test_composite_primary_key() -> None:
    def declare(base: type[SyncedBase]) -> object:
        class Pair(base):  # type: ignore[valid-type,misc]
            __tablename__ = "pairs"
            a: Mapped[str] = mapped_column(primary_key=True)
            b: Mapped[str] = mapped_column(primary_key=True)

        return Pair

    _only(_declare_fails(declare), "pairs", "composite_primary_key", "Pair")


@pytest.mark.parametrize("annotation", [int, float, bytes, datetime])
def test_key_must_be_uuid_or_text(annotation: type) -> None:
    def declare(base: type[SyncedBase]) -> object:
        return type(
            "Counter",
            (base,),
            {
                "__tablename__": "counters",
                "__annotations__": {"id": Mapped[annotation]},  # type: ignore[valid-type]
                "id": mapped_column(primary_key=True, autoincrement=False),
            },
        )

    _only(_declare_fails(declare), "counters", "key_type", "Counter")


def test_enum_key_is_not_a_text_key() -> None:
    def declare(base: type[SyncedBase]) -> object:
        class Kind(base):  # type: ignore[valid-type,misc]
            __tablename__ = "kinds"
            id: Mapped[str] = mapped_column(sa.Enum("a", "b", name="kind"), primary_key=True)

        return Kind

    _only(_declare_fails(declare), "kinds", "key_type", "Kind")


def test_user_column_named_like_the_scope_column() -> None:
    def declare(base: type[SyncedBase]) -> object:
        class Owned(base):  # type: ignore[valid-type,misc]
            __tablename__ = "owned"
            id: Mapped[str] = mapped_column(primary_key=True)
            _sync_scope_id: Mapped[str]

        return Owned

    _only(_declare_fails(declare), "owned", "reserved_column", "Owned")


def test_composite_foreign_key() -> None:
    def declare(base: type[SyncedBase]) -> object:
        class Target(base):  # type: ignore[valid-type,misc]
            __tablename__ = "targets"
            id: Mapped[str] = mapped_column(primary_key=True)
            other: Mapped[str] = mapped_column(unique=True)

        class Source(base):  # type: ignore[valid-type,misc]
            __tablename__ = "sources"
            __table_args__ = (
                sa.ForeignKeyConstraint(["t_id", "t_other"], ["targets.id", "targets.other"],
                                        name="sources_target_fkey"),
            )
            id: Mapped[str] = mapped_column(primary_key=True)
            t_id: Mapped[str]
            t_other: Mapped[str]

        return Source

    err = _declare_fails(declare)
    _only(err, "sources", "composite_fk", "Source")
    assert err.violations[0].constraint == "sources_target_fkey"


def test_schema_qualified_model() -> None:
    def declare(base: type[SyncedBase]) -> object:
        class Elsewhere(base):  # type: ignore[valid-type,misc]
            __tablename__ = "elsewhere"
            __table_args__: ClassVar[dict[str, str]] = {"schema": "other"}
            id: Mapped[str] = mapped_column(primary_key=True)

        return Elsewhere

    _only(_declare_fails(declare), "elsewhere", "table_schema", "Elsewhere")


def test_mixed_case_identifiers() -> None:
    def declare(base: type[SyncedBase]) -> object:
        class Loud(base):  # type: ignore[valid-type,misc]
            __tablename__ = "Loud"
            id: Mapped[str] = mapped_column(primary_key=True)
            Name: Mapped[str]

        return Loud

    err = _declare_fails(declare)
    assert _rules_of(err) == [("Loud", "identifier_case"), ("Loud", "identifier_case")]


def _rules_of(err: UnsupportedSchemaError) -> list[tuple[str, str]]:
    return [(v.table, v.rule) for v in err.violations]


def test_reserved_table_name() -> None:
    def declare(base: type[SyncedBase]) -> object:
        class Sneaky(base):  # type: ignore[valid-type,misc]
            __tablename__ = "_sync_things"
            id: Mapped[str] = mapped_column(primary_key=True)

        return Sneaky

    _only(_declare_fails(declare), "_sync_things", "reserved_table_name", "Sneaky")


def test_generic_uuid_and_datetime_types_on_models() -> None:
    def declare(base: type[SyncedBase]) -> object:
        class Generic(base):  # type: ignore[valid-type,misc]
            __tablename__ = "generic"
            id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
            at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))

        return Generic

    err = _declare_fails(declare)
    assert _rules_of(err) == [("generic", "local_type"), ("generic", "local_type")]
    assert "Generic" in str(err)


def test_unsupported_server_default() -> None:
    md = sa.MetaData()
    table = sa.Table(
        "seq", md,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("n", sa.BigInteger, sa.Identity()),
    )
    with pytest.raises(UnsupportedSchemaError) as err:
        sync_table(table)
    assert _rules(err) == [("seq", "server_default")]


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"ondelete": "EXPLODE"}, "fk_action"),
        ({"onupdate": "SET NULL"}, "fk_on_update_set_null"),
        ({"onupdate": "SET DEFAULT"}, "fk_on_update_set_null"),
        ({"match": "FULL"}, "fk_match"),
    ],
)
def test_foreign_key_actions_and_match(kwargs: dict[str, Any], rule: str) -> None:
    md = sa.MetaData()
    sync_table(sa.Table("p", md, sa.Column("id", sa.Text, primary_key=True)))
    child = sa.Table(
        "c", md,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("p_id", sa.Text, sa.ForeignKey("p.id", name="c_p_fkey", **kwargs)),
    )
    with pytest.raises(UnsupportedSchemaError) as err:
        sync_table(child)
    assert _rules(err) == [("c", rule)]
    assert err.value.violations[0].constraint == "c_p_fkey"


def test_expression_and_partial_indexes() -> None:
    md = sa.MetaData()
    table = sa.Table(
        "docs", md,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("title", sa.Text),
    )
    sa.Index("docs_lower_title", sa.func.lower(table.c.title))
    sa.Index("docs_partial", table.c.title, postgresql_where=table.c.title.is_not(None))
    with pytest.raises(UnsupportedSchemaError) as err:
        sync_table(table)
    assert _rules(err) == [("docs", "expression_index"), ("docs", "partial_index")]


def test_core_table_without_primary_key_and_wrong_key() -> None:
    md = sa.MetaData()
    with pytest.raises(UnsupportedSchemaError) as err:
        sync_table(sa.Table("loose", md, sa.Column("id", sa.Text)))
    assert _rules(err) == [("loose", "missing_primary_key")]
    keyed = sa.Table(
        "keyed", md, sa.Column("id", sa.Text, primary_key=True), sa.Column("ext", sa.Text)
    )
    with pytest.raises(UnsupportedSchemaError) as err:
        sync_table(keyed, key="ext")
    assert _rules(err) == [("keyed", "key_not_primary_key")]


def test_fk_to_unsynced_or_undeclared_table_fails_at_registry_time() -> None:
    class Base(SyncedBase):
        pass

    sa.Table("plain", Base.metadata, sa.Column("id", sa.Text, primary_key=True))

    class Note(Base):
        __tablename__ = "notes"
        id: Mapped[str] = mapped_column(primary_key=True)
        plain_id: Mapped[str] = mapped_column(sa.ForeignKey("plain.id"))
        ghost_id: Mapped[str] = mapped_column(sa.ForeignKey("ghosts.id", name="notes_ghost"))

    with pytest.raises(UnsupportedSchemaError) as err:
        sync_registry(Base)
    assert _rules(err) == [("notes", "fk_unsynced_parent"), ("notes", "fk_unsynced_parent")]
    for fragment in ("Note", "ghosts", "plain"):
        assert fragment in str(err.value)
    with pytest.raises(UnsupportedSchemaError):
        server_projection(Base)


def test_fk_must_target_the_parent_key_with_the_same_kind_and_storage() -> None:
    class Base(SyncedBase):
        pass

    class Parent(Base):
        __tablename__ = "parents"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
        code: Mapped[str] = mapped_column(unique=True)

    class Child(Base):
        __tablename__ = "children"
        id: Mapped[str] = mapped_column(primary_key=True)
        by_code: Mapped[str] = mapped_column(sa.ForeignKey("parents.code", name="c_code"))
        by_text: Mapped[str] = mapped_column(
            sa.Text, sa.ForeignKey("parents.id", name="c_text")
        )
        by_text_uuid: Mapped[uuid.UUID] = mapped_column(
            SyncUUID("text"), sa.ForeignKey("parents.id", name="c_uuid")
        )

    with pytest.raises(UnsupportedSchemaError) as err:
        sync_registry(Base)
    assert [(v.rule, v.constraint) for v in err.value.violations] == [
        ("fk_target_not_key", "c_code"),
        ("fk_column_type", "c_text"),
        ("uuid_storage_mismatch", "c_uuid"),
    ]


def test_all_violations_of_a_model_are_listed() -> None:
    def declare(base: type[SyncedBase]) -> object:
        class Broken(base):  # type: ignore[valid-type,misc]
            __tablename__ = "Broken"
            a: Mapped[int] = mapped_column(primary_key=True)
            b: Mapped[int] = mapped_column(primary_key=True)
            _sync_scope_id: Mapped[str]

        return Broken

    err = _declare_fails(declare)
    assert sorted(v.rule for v in err.violations) == [
        "composite_primary_key",
        "identifier_case",
        "reserved_column",
    ]
    assert all("Broken" in str(v) for v in err.violations)
    assert "3 violation(s)" in str(err)


def test_all_violations_of_a_metadata_set_are_listed() -> None:
    class Base(SyncedBase):
        pass

    class One(Base):
        __tablename__ = "one"
        id: Mapped[str] = mapped_column(primary_key=True)
        x_id: Mapped[str] = mapped_column(sa.ForeignKey("nowhere.id"))

    class Two(Base):
        __tablename__ = "two"
        id: Mapped[str] = mapped_column(primary_key=True)
        one_id: Mapped[uuid.UUID] = mapped_column(SyncUUID(), sa.ForeignKey("one.id"))
        y_id: Mapped[str] = mapped_column(sa.ForeignKey("elsewhere.id"))

    with pytest.raises(UnsupportedSchemaError) as err:
        sync_registry(Base)
    assert _rules(err) == [
        ("one", "fk_unsynced_parent"),
        ("two", "fk_column_type"),
        ("two", "fk_unsynced_parent"),
    ]
