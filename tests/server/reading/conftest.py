"""Fixtures of the read-path tests."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import SyncService
from tests.server.reading._support import make_service


@pytest.fixture
async def service(pg_engine: AsyncEngine) -> SyncService:
    """A bootstrapped service over the small ``app`` schema."""
    return await make_service(pg_engine)
