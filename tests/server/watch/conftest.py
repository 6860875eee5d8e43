"""Fixtures of the bundle-change watch tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import SyncService
from oversync_sa.server.watch import BundleChangeWatch, bundle_change_watch
from tests.server.watch._support import make_service


@pytest.fixture
async def service(pg_engine: AsyncEngine) -> SyncService:
    """A bootstrapped service with the watch enabled (heartbeat 5 s)."""
    return await make_service(pg_engine)


@pytest.fixture
async def watch(service: SyncService) -> AsyncIterator[BundleChangeWatch]:
    """The service's watch with its listener started and connected; closed afterwards."""
    runtime = bundle_change_watch(service)
    await runtime.start()
    async with asyncio.timeout(10):
        await runtime.wait_listening()
    try:
        yield runtime
    finally:
        await runtime.close()
