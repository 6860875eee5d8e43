"""Registration, registry contents and dependency order of synced models."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from examples.business_models import REGISTER_ORDER, BusinessBase
from oversync_sa.errors import ConfigurationError
from oversync_sa.metadata import (
    SyncedBase,
    SyncOptions,
    SyncRegistration,
    SyncUUID,
    registration_of,
    sync_registry,
    sync_table,
)


def test_each_base_has_its_own_metadata_and_registry() -> None:
    class BaseA(SyncedBase):
        pass

    class BaseB(SyncedBase):
        pass

    class ThingA(BaseA):
        __tablename__ = "things"
        id: Mapped[str] = mapped_column(primary_key=True)

    class ThingB(BaseB):
        __tablename__ = "things"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)

    assert BaseA.metadata is not BaseB.metadata
    assert BaseA.registry is not BaseB.registry
    assert list(BaseA.metadata.tables) == ["things"]
    assert ThingA.__table__ is not ThingB.__table__
    assert issubclass(ThingA, SyncedBase)
    assert sync_registry(BaseA).tables["things"].key_kind == "text"
    assert sync_registry(BaseB).tables["things"].key_kind == "uuid"


def test_registration_is_recorded_in_table_info() -> None:
    class Base(SyncedBase):
        pass

    class Country(Base):
        __tablename__ = "countries"
        __sync_options__ = SyncOptions(download_only=True)
        code: Mapped[str] = mapped_column(primary_key=True)

    reg = registration_of(Country.__table__)  # type: ignore[arg-type]
    assert reg == SyncRegistration("code", SyncOptions(download_only=True), "Country")
    assert reg is not None
    assert reg.download_only
    info = sync_registry(Base).tables["countries"]
    assert (info.name, info.key_column, info.key_kind) == ("countries", "code", "text")
    assert info.download_only is True
    assert info.table is Country.__table__


def test_registry_lists_tables_in_declaration_order_with_parents() -> None:
    reg = sync_registry(BusinessBase)
    assert list(reg.tables) == REGISTER_ORDER
    assert reg.tables["posts"].parents == ("users",)
    assert reg.tables["categories"].parents == ()  # self-reference excluded
    assert reg.tables["teams"].parents == ("team_members",)
    assert reg.tables["team_members"].parents == ("teams",)
    assert all(i.key_kind == "uuid" and i.key_column == "id" for i in reg)
    assert not any(i.download_only for i in reg)
    assert len(reg) == 8


def test_dependency_order_of_example_puts_parents_first_and_cycle_in_declaration_order() -> None:
    assert sync_registry(BusinessBase).dependency_order() == [
        "users",
        "posts",
        "categories",
        "teams",
        "team_members",
        "files",
        "file_reviews",
        "typed_rows",
    ]


def _core_table(md: sa.MetaData, name: str, *parents: str, alter: bool = False) -> sa.Table:
    cols = [
        sa.Column(f"{p}_id", sa.Text, sa.ForeignKey(f"{p}.id", use_alter=alter)) for p in parents
    ]
    return sync_table(sa.Table(name, md, sa.Column("id", sa.Text, primary_key=True), *cols))


def test_dependency_order_handles_children_declared_before_parents_and_cycles() -> None:
    md = sa.MetaData()
    _core_table(md, "grandchild", "child")
    _core_table(md, "child", "parent")
    _core_table(md, "b", "a", alter=True)
    _core_table(md, "a", "b", "parent")
    _core_table(md, "after_cycle", "b")
    _core_table(md, "parent")
    order = sync_registry(md).dependency_order()
    assert order == ["parent", "child", "grandchild", "b", "a", "after_cycle"]


def test_dependency_order_is_independent_of_run() -> None:
    md = sa.MetaData()
    _core_table(md, "z", "y", alter=True)
    _core_table(md, "y", "x")
    _core_table(md, "x", "z")
    assert sync_registry(md).dependency_order() == ["z", "y", "x"]


def test_sync_table_marks_core_tables_and_ignores_unsynced_ones() -> None:
    md = sa.MetaData()
    local = sa.Table("local_settings", md, sa.Column("k", sa.Integer, primary_key=True))
    notes = sync_table(
        sa.Table("notes", md, sa.Column("id", sa.Uuid, primary_key=True)),
        key="id",
        options=SyncOptions(download_only=True),
    )
    assert registration_of(local) is None
    reg = sync_registry(md)
    assert list(reg.tables) == ["notes"]
    assert reg.tables["notes"].table is notes
    assert reg.tables["notes"].download_only


def test_uuid_storage_is_decided_by_role_at_registration() -> None:
    class Base(SyncedBase):
        pass

    class Parent(Base):
        __tablename__ = "parents"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
        external_ref: Mapped[uuid.UUID | None]

    class Child(Base):
        __tablename__ = "children"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
        parent_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("parents.id"))

    def storage(col: sa.ColumnElement[Any]) -> str | None:
        assert isinstance(col.type, SyncUUID)
        return col.type.local_storage

    assert storage(Parent.__table__.c.id) == "blob"
    assert storage(Parent.__table__.c.external_ref) == "text"
    assert storage(Child.__table__.c.parent_id) == "blob"


def test_fk_column_declared_before_its_parent_gets_blob_storage() -> None:
    class Base(SyncedBase):
        pass

    class Child(Base):
        __tablename__ = "children"
        id: Mapped[str] = mapped_column(primary_key=True)
        parent_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("parents.id"))

    class Parent(Base):
        __tablename__ = "parents"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)

    child_type = Child.__table__.c.parent_id.type
    assert isinstance(child_type, SyncUUID)
    assert child_type.local_storage == "blob"
    assert sync_registry(Base).tables["children"].parents == ("parents",)


def test_text_stored_uuid_keys_are_supported_when_fk_columns_agree() -> None:
    class Base(SyncedBase):
        pass

    class Parent(Base):
        __tablename__ = "parents"
        id: Mapped[uuid.UUID] = mapped_column(SyncUUID("text"), primary_key=True)

    class Child(Base):
        __tablename__ = "children"
        id: Mapped[str] = mapped_column(primary_key=True)
        parent_id: Mapped[uuid.UUID] = mapped_column(SyncUUID("text"), sa.ForeignKey("parents.id"))

    assert sync_registry(Base).tables["parents"].key_kind == "uuid"


@pytest.mark.parametrize("bad", [object(), 42, "users"])
def test_sync_registry_rejects_sources_without_metadata(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="declarative base class or a MetaData"):
        sync_registry(bad)


def test_empty_base_has_empty_registry() -> None:
    class Base(SyncedBase):
        pass

    reg = sync_registry(Base)
    assert dict(reg.tables) == {}
    assert reg.dependency_order() == []
