"""Fixtures of the security suite: the HTTP tests' app over the §10.1 business schema, and an
app over a schema of every column type the type checks need (``sec.kinds``, ``sec.notes``).

Apps and services are built with the HTTP tests' helpers; httpx talks to them over ASGI in the
test's own event loop, exactly as in ``tests/http``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import RegisteredTable, ServiceConfig, SyncService
from tests.http.http_support import app_client, client_fixture, make_app, service_fixture

__all__ = ["client_fixture", "service_fixture"]

#: One column per PostgreSQL type a payload value is converted into; ``notes`` has a text key.
KINDS_DDL = (
    "CREATE SCHEMA sec",
    "CREATE TABLE sec.kinds ("
    " _sync_scope_id text NOT NULL, id uuid NOT NULL,"
    " i integer, big bigint, n numeric, d date, ts timestamptz, flag boolean,"
    " u uuid, t text, j jsonb, bin bytea,"
    " PRIMARY KEY (_sync_scope_id, id))",
    "CREATE TABLE sec.notes ("
    " _sync_scope_id text NOT NULL, code text NOT NULL, body text,"
    " PRIMARY KEY (_sync_scope_id, code))",
)


@pytest.fixture
async def kinds_service(pg_engine: AsyncEngine) -> SyncService:
    async with pg_engine.begin() as conn:
        for statement in KINDS_DDL:
            await conn.execute(sa.text(statement))
    tables = (RegisteredTable("sec", "kinds", "id"), RegisteredTable("sec", "notes", "code"))
    service = SyncService(pg_engine, ServiceConfig(registered_tables=tables))
    await service.bootstrap()
    return service


@pytest.fixture
async def kinds_client(kinds_service: SyncService) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_app(kinds_service)) as test_client:
        yield test_client
