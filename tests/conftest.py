"""Shared fixtures: a real PostgreSQL for the whole run, a fresh database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from oversync_sa.testing import PostgresServer, find_postgres, sqlalchemy_url

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session, found in the documented order."""
    server = find_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database (``postgresql://`` URL) dropped after the test."""
    url = pg_server.create_database()
    try:
        yield url
    finally:
        pg_server.drop_database(url)


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    """An asyncpg-backed SQLAlchemy engine on the test's own database."""
    engine = create_async_engine(sqlalchemy_url(pg_url), pool_size=5, max_overflow=10)
    try:
        yield engine
    finally:
        await engine.dispose()
