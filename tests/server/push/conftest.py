"""Fixtures for the connect / push-session tests: the Go example schema, bootstrapped."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import SyncService
from tests.server.push._support import make_service


@pytest.fixture
async def service(pg_engine: AsyncEngine) -> SyncService:
    """The §10.1 business schema (from ``examples.business_models``), bootstrapped."""
    return await make_service(pg_engine)
