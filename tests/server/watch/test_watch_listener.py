"""The LISTEN side (§7.4): real commits wake the right subscribers, reconnects catch up."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import ScopeWriteNoCapturedChangesError
from oversync_sa.server import SyncService
from oversync_sa.server.notify import bundle_change_payload
from oversync_sa.server.watch import (
    LISTENER_APPLICATION_NAME,
    BundleChangeSubscription,
    BundleChangeWatch,
    subscribe,
)
from oversync_sa.server.writes import BundleSource, BundleWriter, ScopeManager, within_sync_bundle
from oversync_sa.wire import BundleChangeEvent
from tests.server.watch._support import make_service, wait_until, watch_config, write_note


async def assert_quiet(sub: BundleChangeSubscription, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            await sub.receive()


async def next_event(sub: BundleChangeSubscription) -> BundleChangeEvent | None:
    async with asyncio.timeout(5):
        return await sub.receive()


async def notify(
    engine: AsyncEngine, payload: str, channel: str = "oversync_bundle_change_v1"
) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})


async def test_a_commit_wakes_only_that_users_subscribers(
    service: SyncService, watch: BundleChangeWatch
) -> None:
    await write_note(service, "alice")
    await write_note(service, "bob")
    alice = await subscribe(service, "alice", 1)
    alice_too = await subscribe(service, "alice", 1)
    bob = await subscribe(service, "bob", 1)
    bundle = await write_note(service, "alice", writer="device-a")
    expected = BundleChangeEvent(bundle_seq=2, source_id="device-a", source_bundle_id=1)
    assert bundle.bundle_seq == 2
    assert await next_event(alice) == expected
    assert await next_event(alice_too) == expected
    await assert_quiet(bob)


async def test_rolled_back_and_empty_bundles_send_nothing(
    service: SyncService, watch: BundleChangeWatch
) -> None:
    await write_note(service, "alice")
    sub = await subscribe(service, "alice", 1)

    async def nothing(_: BundleWriter) -> None:
        return None

    with pytest.raises(ScopeWriteNoCapturedChangesError):
        await ScopeManager(service).exec_write("alice", nothing, writer_id="server")

    async def then_fail(w: BundleWriter) -> None:
        await w.connection.execute(
            sa.text("INSERT INTO business.notes VALUES (:s, gen_random_uuid(), 'x')"),
            {"s": w.user_id},
        )
        raise RuntimeError("abort the bundle")

    with pytest.raises(RuntimeError, match="abort"):
        await ScopeManager(service).exec_write("alice", then_fail, writer_id="server")

    async def unregistered_only(w: BundleWriter) -> None:
        await w.connection.execute(sa.text("INSERT INTO business.audit (note) VALUES ('x')"))

    # WithinSyncBundle commits an empty bundle's transaction, but there is no bundle to announce.
    source = BundleSource("srv", 1)
    assert await within_sync_bundle(service, "alice", source, unregistered_only) is None
    await assert_quiet(sub)
    await write_note(service, "alice")
    assert (await next_event(sub)) == BundleChangeEvent(
        bundle_seq=2, source_id="server", source_bundle_id=2
    )


async def test_invalid_and_foreign_notifications_are_ignored(
    service: SyncService, watch: BundleChangeWatch, caplog: pytest.LogCaptureFixture
) -> None:
    await write_note(service, "alice")
    sub = await subscribe(service, "alice", 1)
    caplog.set_level(logging.WARNING, "oversync_sa.server.watch")
    await notify(service.engine, "{broken")
    await notify(service.engine, f'{{"user_pk":{sub.user_pk},"bundle_seq":0}}')
    await notify(service.engine, bundle_change_payload(user_pk=sub.user_pk, bundle_seq=7), "other")
    await assert_quiet(sub)
    ignored = [r for r in caplog.records if "ignored invalid bundle change" in r.message]
    assert len(ignored) == 2
    # The listener survived them.
    await notify(service.engine, bundle_change_payload(user_pk=sub.user_pk, bundle_seq=8))
    assert await next_event(sub) == BundleChangeEvent(bundle_seq=8)
    assert watch.listening


async def listener_pids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = :name"
            ),
            {"name": LISTENER_APPLICATION_NAME},
        )
        return [int(pid) for pid in rows.scalars()]


async def test_reconnects_after_the_connection_is_killed_and_catches_up(
    service: SyncService, watch: BundleChangeWatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "oversync_sa.server.watch")
    await write_note(service, "alice")
    sub = await subscribe(service, "alice", 1)
    [pid] = await listener_pids(service.engine)
    async with service.engine.connect() as conn:
        await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await wait_until(lambda: not watch.listening)
    # Committed while nobody listens: only the catch-up after reconnecting can announce it.
    await write_note(service, "alice", writer="offline")
    assert await next_event(sub) == BundleChangeEvent(bundle_seq=2)
    assert watch.listening
    [new_pid] = await listener_pids(service.engine)
    assert new_pid != pid
    assert any("listener session failed" in r.message for r in caplog.records)
    await write_note(service, "alice", writer="online")
    assert await next_event(sub) == BundleChangeEvent(
        bundle_seq=3, source_id="online", source_bundle_id=1
    )


async def test_backs_off_while_failing_then_recovers_and_stops_on_close(
    service: SyncService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "oversync_sa.server.watch")
    await write_note(service, "alice")
    watch = BundleChangeWatch(service)
    sub = await watch.subscribe("alice", 0)
    async with service.engine.begin() as conn:  # every catch-up now fails
        await conn.exec_driver_sql("ALTER TABLE sync.user_state RENAME TO user_state_gone")
    await watch.start()
    await watch.start()  # idempotent
    await asyncio.sleep(1.0)
    failures = sum("listener session failed" in r.message for r in caplog.records)
    # 100 ms doubling: attempts at about 0, 0.1, 0.3, 0.7 s (a busy loop would make hundreds).
    assert 3 <= failures <= 6, failures
    assert not watch.listening
    async with service.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE sync.user_state_gone RENAME TO user_state")
    async with asyncio.timeout(5):
        await watch.wait_listening()
    assert await next_event(sub) == BundleChangeEvent(bundle_seq=1)
    await watch.close()
    assert not watch.listening
    assert sub.closed
    assert await listener_pids(service.engine) == []


async def test_periodic_resync_delivers_a_wake_up_whose_notify_was_never_sent(
    pg_engine: AsyncEngine,
) -> None:
    service = await make_service(pg_engine)
    silent = SyncService(pg_engine, watch_config(enabled=False))  # commits without NOTIFY
    await silent.bootstrap()
    await write_note(service, "alice")
    watch = BundleChangeWatch(service, resync_interval=timedelta(milliseconds=100))
    await watch.start()
    try:
        await watch.wait_listening()
        sub = await watch.subscribe("alice", 1)
        await write_note(silent, "alice", writer="quiet")
        assert await next_event(sub) == BundleChangeEvent(bundle_seq=2)
    finally:
        await watch.close()
