"""``subscribe`` (§7.4): checks in order, scope states, catch-up, lifecycle."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import (
    AuthenticationFailedError,
    BundleChangeWatchDisabledError,
    BundleChangeWatchFailedError,
    InvalidRequestError,
    ScopeInitializingError,
    ScopeUninitializedError,
    ServiceUnavailableError,
)
from oversync_sa.server import ServiceClosedError, SyncService
from oversync_sa.server.scope import lock_scope, transition_to_initializing
from oversync_sa.server.watch import BundleChangeWatch, bundle_change_watch, subscribe
from oversync_sa.wire import BundleChangeEvent
from tests.server.watch._support import make_service, watch_config, write_note


async def test_catch_up_event_when_the_scope_is_past_the_checkpoint(service: SyncService) -> None:
    await write_note(service, "alice")
    await write_note(service, "alice")
    behind = await subscribe(service, "alice", 0)
    assert await behind.receive() == BundleChangeEvent(bundle_seq=2)  # no source fields
    level = await subscribe(service, "alice", 2)
    ahead = await subscribe(service, "alice", 5)
    for sub in (level, ahead):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await sub.receive()
    assert bundle_change_watch(service).hub.subscriber_count(behind.user_pk) == 3
    for sub in (behind, level, ahead):
        sub.close()
    assert await bundle_change_watch(service).subscriber_count("alice") == 0
    assert await bundle_change_watch(service).subscriber_count("nobody") == 0
    assert service.in_flight == 0  # an open subscription is not an in-flight operation


async def test_argument_checks_come_before_the_database(service: SyncService) -> None:
    with pytest.raises(AuthenticationFailedError, match="user_id is required"):
        await subscribe(service, "", 0)
    with pytest.raises(InvalidRequestError, match="after_bundle_seq must be >= 0"):
        await subscribe(service, "alice", -1)


async def test_scope_must_be_initialized(service: SyncService) -> None:
    with pytest.raises(ScopeUninitializedError):
        await subscribe(service, "never-connected", 0)
    async with service.engine.begin() as conn:
        scope = await lock_scope(conn, "leased")
        await transition_to_initializing(conn, scope, "dev", timedelta(minutes=5))
    with pytest.raises(ScopeInitializingError):
        await subscribe(service, "leased", 0)
    async with service.engine.begin() as conn:
        scope = await lock_scope(conn, "expired")
        await transition_to_initializing(conn, scope, "dev", timedelta(0))
    with pytest.raises(ScopeUninitializedError):  # an expired lease reads as uninitialized
        await subscribe(service, "expired", 0)
    assert bundle_change_watch(service).hub.active_user_pks() == []


async def test_disabled_watch_refuses_subscribe_and_start(pg_engine: AsyncEngine) -> None:
    service = await make_service(pg_engine, watch_config(enabled=False))
    with pytest.raises(BundleChangeWatchDisabledError):
        await subscribe(service, "alice", -1)  # "disabled" wins over every other check
    with pytest.raises(BundleChangeWatchDisabledError):
        await bundle_change_watch(service).start()


async def test_shutdown_refuses_new_and_ends_open_subscriptions(pg_engine: AsyncEngine) -> None:
    service = await make_service(pg_engine)
    await write_note(service, "alice")
    watch = bundle_change_watch(service)
    await watch.start()
    open_sub = await subscribe(service, "alice", 1)
    waiter = asyncio.create_task(open_sub.receive())
    await watch.close()
    await watch.close()  # idempotent
    assert await waiter is None
    assert open_sub.closed
    with pytest.raises(ServiceUnavailableError, match="shutting down"):
        await subscribe(service, "alice", 0)
    with pytest.raises(ServiceUnavailableError):
        await watch.start()
    await service.close()
    with pytest.raises(ServiceClosedError):
        await subscribe(service, "alice", 0)


async def test_service_shutting_down_is_service_unavailable(pg_engine: AsyncEngine) -> None:
    service = await make_service(pg_engine)
    await write_note(service, "alice")
    release = asyncio.Event()

    async def hold() -> None:
        async with service.operation():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    closing = asyncio.create_task(service.close())
    await asyncio.sleep(0)
    with pytest.raises(ServiceUnavailableError, match="Sync service is shutting down"):
        await subscribe(service, "alice", 0)
    release.set()
    await asyncio.gather(holder, closing)


async def test_database_failure_is_watch_failed(pg_engine: AsyncEngine) -> None:
    service = await make_service(pg_engine)
    await write_note(service, "alice")
    async with pg_engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE sync.user_state RENAME TO user_state_gone")
    with pytest.raises(BundleChangeWatchFailedError, match="Failed to subscribe") as info:
        await subscribe(service, "alice", 0)
    assert info.value.__cause__ is not None


def test_resync_interval_must_be_positive(service: SyncService) -> None:
    with pytest.raises(ValueError, match="resync_interval"):
        BundleChangeWatch(service, resync_interval=timedelta(0))
