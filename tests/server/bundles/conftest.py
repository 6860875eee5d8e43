"""Fixtures for the bundle machinery tests."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import BundleChangeWatchConfig, SyncService
from tests.server.bundles._support import make_service


@pytest.fixture
async def service(pg_engine: AsyncEngine) -> SyncService:
    """A bootstrapped service over the business schema of ``_support``."""
    return await make_service(pg_engine)


@pytest.fixture
async def watch_service(pg_engine: AsyncEngine) -> SyncService:
    """Same, with the bundle-change watch (and so NOTIFY) enabled."""
    return await make_service(pg_engine, bundle_change_watch=BundleChangeWatchConfig(enabled=True))
