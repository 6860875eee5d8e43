"""Fixtures for the SQLite client building blocks: a fresh file database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from oversync_sa.client import (
    ClientConfig,
    ManagedSchema,
    SyncTable,
    initialize_database,
    install_managed_triggers,
    validate_managed_tables,
)
from oversync_sa.client.client import SyncClient
from tests.client.lifecycle.fakes import FakeServer, closing, make_client

SCHEMA = "business"

#: The mobile_flow simulator tables (CLIENT.md §11.2), in the simulator's config order.
SIMULATOR_DDL = {
    "users": "CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
    " email TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
    "posts": "CREATE TABLE posts (id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL,"
    " content TEXT NOT NULL, author_id TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,"
    " FOREIGN KEY(author_id) REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED)",
    "categories": "CREATE TABLE categories (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
    " parent_id TEXT, FOREIGN KEY(parent_id) REFERENCES categories(id) ON DELETE CASCADE"
    " DEFERRABLE INITIALLY DEFERRED)",
    "teams": "CREATE TABLE teams (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
    " captain_member_id TEXT, FOREIGN KEY(captain_member_id) REFERENCES team_members(id)"
    " DEFERRABLE INITIALLY DEFERRED)",
    "team_members": "CREATE TABLE team_members (id TEXT PRIMARY KEY NOT NULL,"
    " name TEXT NOT NULL, team_id TEXT NOT NULL, FOREIGN KEY(team_id) REFERENCES teams(id)"
    " ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED)",
    "files": "CREATE TABLE files (id BLOB PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
    " data BLOB NOT NULL)",
    "file_reviews": "CREATE TABLE file_reviews (id BLOB PRIMARY KEY NOT NULL,"
    " review TEXT NOT NULL, file_id BLOB NOT NULL, FOREIGN KEY(file_id) REFERENCES files(id)"
    " ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED)",
    "typed_rows": "CREATE TABLE typed_rows (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
    " note TEXT NULL, count_value INTEGER NULL, enabled_flag INTEGER NOT NULL, rating REAL NULL,"
    " data BLOB NULL, created_at TEXT NULL)",
}


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'client.db'}")
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection on an initialised database (metadata tables present, nothing pending)."""
    async with engine.connect() as connection:
        await initialize_database(connection)
        yield connection


@pytest.fixture
def server() -> FakeServer:
    """The scripted sync server of ``tests.client.lifecycle.fakes`` (the facade tests override
    this and ``client`` with their in-memory server)."""
    return FakeServer()


@pytest.fixture
async def client(tmp_path: Path, server: FakeServer) -> AsyncIterator[SyncClient]:
    """One client on a fresh file, talking to ``server``."""
    async with closing(await make_client(tmp_path / "c.db", server)) as client:
        yield client


async def execute_all(conn: AsyncConnection, statements: Iterable[str]) -> None:
    for statement in statements:
        await conn.exec_driver_sql(statement)
    await conn.commit()


async def manage(
    conn: AsyncConnection, tables: Iterable[SyncTable], schema: str = SCHEMA
) -> ManagedSchema:
    """Validate ``tables`` and install their triggers, committed."""
    managed = await validate_managed_tables(conn, ClientConfig(schema, tuple(tables)))
    await install_managed_triggers(conn, managed)
    await conn.commit()
    return managed


async def rows(
    conn: AsyncConnection, sql: str, params: tuple[object, ...] = ()
) -> list[tuple[object, ...]]:
    return [tuple(r) for r in await conn.exec_driver_sql(sql, params)]
