"""SyncService construction and lifecycle (SERVER.md §2.1, §7.6)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from oversync_sa.errors import OversyncError, ServiceUnavailableError
from oversync_sa.server import ServiceClosedError, ServiceConfig, ServiceState, SyncService


def _offline_service() -> SyncService:
    # an unreachable URL proves construction does not touch the database
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    return SyncService(engine, ServiceConfig())


async def test_construction_needs_no_database() -> None:
    service = _offline_service()
    assert service.state is ServiceState.RUNNING
    assert not service.is_bootstrapped
    with pytest.raises(OversyncError, match="bootstrap"):
        _ = service.runtime


async def test_close_drains_in_flight_operations() -> None:
    service = _offline_service()
    release = asyncio.Event()

    async def work() -> None:
        async with service.operation():
            await release.wait()

    task = asyncio.create_task(work())
    await asyncio.sleep(0)
    assert service.in_flight == 1
    closing = asyncio.create_task(service.close())
    await asyncio.sleep(0)
    assert service.state is ServiceState.SHUTTING_DOWN
    with pytest.raises(ServiceUnavailableError, match="Sync service is shutting down"):
        async with service.operation():
            pass
    release.set()
    await asyncio.gather(task, closing)
    assert service.state is ServiceState.CLOSED
    assert service.in_flight == 0
    with pytest.raises(ServiceClosedError):
        async with service.operation():
            pass
    await service.close()  # idempotent
