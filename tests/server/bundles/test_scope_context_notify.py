"""Scope states (§4.1), bundle context (§3.2) and the NOTIFY side of the watch (§7.4)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import ScopeInitializingError, ScopeUninitializedError
from oversync_sa.server import SyncService
from oversync_sa.server.context import (
    BundleContext,
    BundleContextConflictError,
    read_bundle_context,
    set_bundle_context,
)
from oversync_sa.server.notify import bundle_change_payload
from oversync_sa.server.scope import (
    ScopeState,
    lock_scope,
    read_scope,
    require_initialized,
    transition_to_initialized,
    transition_to_initializing,
)
from tests.server.bundles._support import exec_write, sql


async def test_lease_lifecycle_read_path_and_writer_expiry(service: SyncService) -> None:
    engine = service.engine
    async with engine.begin() as conn:
        scope = await lock_scope(conn, "alice")
        assert scope.state is ScopeState.UNINITIALIZED
        assert scope.next_bundle_seq == 1
        leased = await transition_to_initializing(conn, scope, "dev", timedelta(minutes=5))
        assert leased.initialization_id
        assert leased.lease_expires_at is not None
    async with engine.connect() as conn:
        live = await read_scope(conn, "alice")
        assert live is not None
        assert live.state is ScopeState.INITIALIZING
        with pytest.raises(ScopeInitializingError):
            require_initialized(live, "alice")
        assert await read_scope(conn, "nobody") is None
    with pytest.raises(ScopeUninitializedError):
        require_initialized(None, "nobody")

    async with engine.begin() as conn:  # a lease that ends "now" is past for the next tx
        await transition_to_initializing(conn, await lock_scope(conn, "alice"), "dev", timedelta(0))
    async with engine.connect() as conn:
        seen = await read_scope(conn, "alice")
        assert seen is not None
        assert seen.state is ScopeState.UNINITIALIZED
        raw = await conn.scalar(sa.text("SELECT state_code FROM sync.scope_state"))
        assert raw == 1  # the read path wrote nothing
    async with engine.begin() as conn:
        expired = await lock_scope(conn, "alice")
        assert expired.state is ScopeState.UNINITIALIZED
        assert expired.initialization_id is None
        done = await transition_to_initialized(conn, expired, "dev")
        assert require_initialized(done, "alice").initialized_by_source_id == "dev"
    async with engine.connect() as conn:
        final = await read_scope(conn, "alice")
        assert final is not None
        assert final.state is ScopeState.INITIALIZED
        assert final.initialized_at is not None


async def test_bundle_context_is_idempotent_but_never_overwritten(service: SyncService) -> None:
    context = BundleContext("alice", 7, "dev", 3)
    async with service.engine.begin() as conn:
        await set_bundle_context(conn, context)
        await set_bundle_context(conn, context)
        assert await read_bundle_context(conn) == ("alice", "7", "dev", "3", "")
        with pytest.raises(BundleContextConflictError, match=r"oversync\.bundle_source_bundle_id"):
            await set_bundle_context(conn, BundleContext("alice", 7, "dev", 4))
        assert (await read_bundle_context(conn))[3] == "3"
    async with service.engine.connect() as conn:  # transaction-local: gone after commit
        assert await read_bundle_context(conn) == ("", "", "", "", "")


def test_notify_payload_omits_empty_source_fields() -> None:
    assert json.loads(bundle_change_payload(user_pk=3, bundle_seq=9)) == {
        "user_pk": 3,
        "bundle_seq": 9,
    }
    assert (
        bundle_change_payload(user_pk=3, bundle_seq=9, source_id="dev", source_bundle_id=2)
        == '{"user_pk":3,"bundle_seq":9,"source_id":"dev","source_bundle_id":2}'
    )


async def _listen(engine: AsyncEngine, channel: str) -> tuple[asyncio.Queue[str], object]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    conn = await engine.connect()
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    await raw.add_listener(channel, lambda *args: queue.put_nowait(args[3]))
    return queue, conn


async def test_notify_is_sent_on_commit_only(watch_service: SyncService) -> None:
    queue, listener = await _listen(watch_service.engine, "oversync_bundle_change_v1")
    try:
        bundle = await exec_write(
            watch_service, "alice", sql("INSERT INTO business.tags (code) VALUES ('a')")
        )
        payload = json.loads(await asyncio.wait_for(queue.get(), 5))
        assert payload == {
            "user_pk": payload["user_pk"],
            "bundle_seq": bundle.bundle_seq,
            "source_id": "server",
            "source_bundle_id": 1,
        }

        # A deferred FK violation fails at COMMIT, after the NOTIFY was queued.
        orphan = sql(
            "INSERT INTO business.posts (id, title, author_id) VALUES "
            "('00000000-0000-4000-8000-0000000000b1', 't', '00000000-0000-4000-8000-0000000000ff')"
        )
        with pytest.raises(sa.exc.IntegrityError):
            await exec_write(watch_service, "alice", orphan)
        await asyncio.sleep(0.2)
        assert queue.empty()
    finally:
        await listener.close()  # type: ignore[attr-defined]


async def test_no_notify_when_watch_is_disabled(service: SyncService) -> None:
    queue, listener = await _listen(service.engine, "oversync_bundle_change_v1")
    try:
        await exec_write(service, "alice", sql("INSERT INTO business.tags (code) VALUES ('a')"))
        await asyncio.sleep(0.2)
        assert queue.empty()
    finally:
        await listener.close()  # type: ignore[attr-defined]
