"""Fixtures of the HTTP tests: a bootstrapped service and a client of an app mounting it.

The client is httpx over ``ASGITransport`` in the test's own event loop (Litestar's test client
runs the app on a loop of its own, which an asyncpg engine made here cannot be used from).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import SyncService
from tests.http.http_support import app_client, make_app, make_service


@pytest.fixture
async def service(pg_engine: AsyncEngine) -> SyncService:
    return await make_service(pg_engine)


@pytest.fixture
async def client(service: SyncService) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_app(service)) as test_client:
        yield test_client
