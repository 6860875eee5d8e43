"""Server projection created on a real PostgreSQL and introspected through pg_catalog."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from examples.business_models import BusinessBase
from oversync_sa.errors import ConfigurationError
from oversync_sa.metadata import SyncedBase, server_projection

pytestmark = pytest.mark.postgres


class Base(SyncedBase):
    pass


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[str] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(unique=True)
    nick: Mapped[str | None] = mapped_column(index=True)


class Pet(Base):
    __tablename__ = "pets"
    __table_args__ = (sa.UniqueConstraint("owner_id", "name", name="pets_owner_name_key"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str]
    owner_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("owners.id", name="pets_owner_id_fkey", ondelete="SET NULL")
    )
    keeper_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("owners.id", name="pets_keeper_id_fkey", onupdate="CASCADE")
    )


async def _create(engine: AsyncEngine, md: sa.MetaData, schema: str = "business") -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        await conn.run_sync(md.create_all)


async def _rows(conn: AsyncConnection, sql: str, **params: object) -> list[tuple[object, ...]]:
    return [tuple(r) for r in (await conn.execute(sa.text(sql), params)).all()]


_INSERT_OWNER = (
    "INSERT INTO business.owners (_sync_scope_id, id, email) VALUES (:scope, 'o', 'e')"
)

_CONSTRAINTS = """
SELECT c.conname, c.contype::text,
       ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o)::text,
       c.condeferrable, c.condeferred, c.confdeltype::text, c.confupdtype::text,
       ARRAY(SELECT a.attname FROM unnest(c.confdelsetcols) k(n)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n)::text
FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = :schema AND t.relname = :table ORDER BY c.conname
"""

_UNIQUE_INDEX_COLUMNS = """
SELECT i.relname, ARRAY(SELECT a.attname FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, o)
                        JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n
                        ORDER BY k.o)::text
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = :schema AND x.indisunique ORDER BY i.relname
"""


async def test_scope_column_keys_uniques_and_fks(pg_engine: AsyncEngine) -> None:
    await _create(pg_engine, server_projection(Base))
    async with pg_engine.connect() as conn:
        cols = await _rows(
            conn,
            "SELECT column_name, udt_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'business' AND table_name = 'owners' ORDER BY ordinal_position",
        )
        assert cols == [
            ("_sync_scope_id", "text", "NO"),
            ("id", "text", "NO"),
            ("email", "text", "NO"),
            ("nick", "text", "YES"),
        ]
        owners = await _rows(conn, _CONSTRAINTS, schema="business", table="owners")
        assert [(r[1], r[2]) for r in owners] == [
            ("u", "{_sync_scope_id,email}"),
            ("p", "{_sync_scope_id,id}"),
        ]
        pets = {r[0]: r for r in await _rows(conn, _CONSTRAINTS, schema="business", table="pets")}
        assert pets["pets_owner_id_fkey"][1:] == (
            "f", "{_sync_scope_id,owner_id}", True, True, "n", "a", "{owner_id}"
        )
        assert pets["pets_keeper_id_fkey"][1:] == (
            "f", "{_sync_scope_id,keeper_id}", True, True, "a", "c", "{}"
        )
        assert pets["pets_owner_name_key"][1:3] == ("u", "{_sync_scope_id,owner_id,name}")
        uniques = await _rows(conn, _UNIQUE_INDEX_COLUMNS, schema="business")
        assert uniques  # bootstrap check i: every unique index begins with the scope column
        assert all(str(cols).startswith("{_sync_scope_id,") for _, cols in uniques)
        plain_index = await _rows(
            conn,
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'business' "
            "AND indexname = 'ix_owners_nick'",
        )
        assert plain_index == [
            ("CREATE INDEX ix_owners_nick ON business.owners USING btree (nick)",)
        ]


async def test_on_delete_set_null_keeps_the_scope_column(pg_engine: AsyncEngine) -> None:
    await _create(pg_engine, server_projection(Base))
    pet_id = uuid.uuid4()
    async with pg_engine.begin() as conn:
        await conn.execute(
            sa.text(_INSERT_OWNER), {"scope": "u1"}
        )
        await conn.execute(
            sa.text(
                "INSERT INTO business.pets (_sync_scope_id, id, name, owner_id) "
                "VALUES ('u1', :id, 'rex', 'o')"
            ),
            {"id": pet_id},
        )
    async with pg_engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM business.owners WHERE id = 'o'"))
    async with pg_engine.connect() as conn:
        assert await _rows(conn, "SELECT _sync_scope_id, owner_id FROM business.pets") == [
            ("u1", None)
        ]


async def test_fks_are_checked_at_commit_and_scope_inclusive(pg_engine: AsyncEngine) -> None:
    await _create(pg_engine, server_projection(Base))
    async with pg_engine.begin() as conn:
        await conn.execute(
            sa.text(_INSERT_OWNER), {"scope": "u1"}
        )
    # The same owner key in another scope does not satisfy the FK.
    with pytest.raises(sa.exc.IntegrityError):
        async with pg_engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO business.pets (_sync_scope_id, id, name, owner_id) "
                    "VALUES ('u2', :id, 'rex', 'o')"
                ),
                {"id": uuid.uuid4()},
            )
    # Child before parent is fine inside one transaction (DEFERRABLE INITIALLY DEFERRED).
    async with pg_engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO business.pets (_sync_scope_id, id, name, owner_id) "
                "VALUES ('u2', :id, 'rex', 'o')"
            ),
            {"id": uuid.uuid4()},
        )
        await conn.execute(
            sa.text(_INSERT_OWNER), {"scope": "u2"}
        )


async def test_example_schema_projection_matches_the_reference(pg_engine: AsyncEngine) -> None:
    await _create(pg_engine, server_projection(BusinessBase, schema="shop"), schema="shop")
    async with pg_engine.connect() as conn:
        tables = await _rows(
            conn,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'shop' "
            "ORDER BY table_name",
        )
        assert [t[0] for t in tables] == sorted(
            ["users", "posts", "categories", "teams", "team_members", "files", "file_reviews",
             "typed_rows"]
        )
        fks = await _rows(
            conn,
            "SELECT c.conname, t.relname, c.confdeltype::text, c.condeferrable, c.condeferred "
            "FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = 'shop' AND c.contype = 'f' ORDER BY c.conname",
        )
        assert fks == [
            ("categories_parent_id_fkey", "categories", "c", True, True),
            ("file_reviews_file_id_fkey", "file_reviews", "c", True, True),
            ("posts_author_id_fkey", "posts", "a", True, True),
            ("team_members_team_id_fkey", "team_members", "c", True, True),
            ("teams_captain_member_id_fkey", "teams", "a", True, True),
        ]
        typed = await _rows(
            conn,
            "SELECT column_name, udt_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'shop' AND table_name = 'typed_rows' ORDER BY ordinal_position",
        )
        assert typed == [
            ("_sync_scope_id", "text", "NO"),
            ("id", "uuid", "NO"),
            ("name", "text", "NO"),
            ("note", "text", "YES"),
            ("count_value", "int8", "YES"),
            ("enabled_flag", "int8", "NO"),
            ("rating", "float8", "YES"),
            ("data", "bytea", "YES"),
            ("created_at", "timestamptz", "YES"),
        ]
        defaults = await _rows(
            conn,
            "SELECT column_name, column_default FROM information_schema.columns "
            "WHERE table_schema = 'shop' AND table_name = 'users' AND column_default IS NOT NULL "
            "ORDER BY column_name",
        )
        assert defaults == [("created_at", "now()"), ("updated_at", "now()")]


def test_schema_name_must_be_usable() -> None:
    for bad in ("", "Business", "a.b", " business"):
        with pytest.raises(ConfigurationError, match="server schema"):
            server_projection(Base, schema=bad)
