"""Fixtures for bootstrap tests: raw-DDL business schemas and a bootstrapped service."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import RegisteredTable, ServiceConfig, SyncService

#: The Go example schema of SERVER.md §10.1, written from its description.
EXAMPLE_DDL: tuple[str, ...] = (
    "CREATE SCHEMA business",
    """CREATE TABLE business.users (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL,
        name TEXT NOT NULL, email TEXT NOT NULL,
        created_at TIMESTAMPTZ DEFAULT now(), updated_at TIMESTAMPTZ DEFAULT now(),
        PRIMARY KEY (_sync_scope_id, id))""",
    """CREATE TABLE business.posts (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL,
        title TEXT NOT NULL, content TEXT NOT NULL, author_id UUID,
        created_at TIMESTAMPTZ DEFAULT now(), updated_at TIMESTAMPTZ DEFAULT now(),
        PRIMARY KEY (_sync_scope_id, id),
        CONSTRAINT posts_author_id_fkey FOREIGN KEY (_sync_scope_id, author_id)
            REFERENCES business.users (_sync_scope_id, id) DEFERRABLE INITIALLY DEFERRED)""",
    """CREATE TABLE business.categories (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL,
        name TEXT NOT NULL, parent_id UUID,
        PRIMARY KEY (_sync_scope_id, id),
        CONSTRAINT categories_parent_id_fkey FOREIGN KEY (_sync_scope_id, parent_id)
            REFERENCES business.categories (_sync_scope_id, id) ON DELETE CASCADE
            DEFERRABLE INITIALLY DEFERRED)""",
    """CREATE TABLE business.teams (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL,
        name TEXT NOT NULL, captain_member_id UUID,
        PRIMARY KEY (_sync_scope_id, id))""",
    """CREATE TABLE business.team_members (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL,
        name TEXT NOT NULL, team_id UUID NOT NULL,
        PRIMARY KEY (_sync_scope_id, id),
        CONSTRAINT team_members_team_id_fkey FOREIGN KEY (_sync_scope_id, team_id)
            REFERENCES business.teams (_sync_scope_id, id) ON DELETE CASCADE
            DEFERRABLE INITIALLY DEFERRED)""",
    """ALTER TABLE business.teams ADD CONSTRAINT teams_captain_member_id_fkey
        FOREIGN KEY (_sync_scope_id, captain_member_id)
        REFERENCES business.team_members (_sync_scope_id, id) DEFERRABLE INITIALLY DEFERRED""",
    """CREATE TABLE business.files (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL,
        name TEXT NOT NULL, data BYTEA NOT NULL,
        PRIMARY KEY (_sync_scope_id, id))""",
    """CREATE TABLE business.file_reviews (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL,
        review TEXT NOT NULL, file_id UUID NOT NULL,
        PRIMARY KEY (_sync_scope_id, id),
        CONSTRAINT file_reviews_file_id_fkey FOREIGN KEY (_sync_scope_id, file_id)
            REFERENCES business.files (_sync_scope_id, id) ON DELETE CASCADE
            DEFERRABLE INITIALLY DEFERRED)""",
    """CREATE TABLE business.typed_rows (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL,
        name TEXT NOT NULL, note TEXT NULL, count_value BIGINT NULL,
        enabled_flag BIGINT NOT NULL, rating DOUBLE PRECISION NULL, data BYTEA NULL,
        created_at TIMESTAMPTZ NULL,
        PRIMARY KEY (_sync_scope_id, id))""",
)

EXAMPLE_TABLES: tuple[str, ...] = (
    "users",
    "posts",
    "categories",
    "teams",
    "team_members",
    "files",
    "file_reviews",
    "typed_rows",
)


def example_config(**overrides: object) -> ServiceConfig:
    tables = tuple(
        RegisteredTable("business", name, sync_key_columns=["id"]) for name in EXAMPLE_TABLES
    )
    return ServiceConfig(registered_tables=tables, **overrides)  # type: ignore[arg-type]


async def run_ddl(engine: AsyncEngine, statements: Sequence[str]) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(sa.text(statement))


@pytest.fixture
async def example_service(pg_engine: AsyncEngine) -> SyncService:
    """The §10.1 schema, bootstrapped."""
    await run_ddl(pg_engine, EXAMPLE_DDL)
    service = SyncService(pg_engine, example_config())
    await service.bootstrap()
    return service
