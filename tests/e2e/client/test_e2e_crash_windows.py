"""The crash windows of CLIENT.md §5.6 against the real server: nothing lost, nothing twice.

A crash is simulated by failing at a boundary (the client's one-shot hooks, or a transport that
loses a request or its reply) and then closing the client and building a new one over the same
SQLite file, as a restarted app would. Every scenario ends by checking the server holds each
local change exactly once, in exactly one bundle of the device's source.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from oversync_sa.client.errors import RetryExhaustedError
from oversync_sa.client.results import PushOutcome
from tests.e2e.client._support import (
    FAST_RETRY,
    INSERT_POST,
    INSERT_USER,
    NO_RETRY,
    Device,
    Harness,
    InjectedCrash,
    LossyTransport,
    crash_hook,
    is_commit,
    is_push_create,
    new_id,
    new_user,
    server_ids,
)

pytestmark = pytest.mark.postgres


async def bundles_of(harness: Harness, user: str, source: str) -> list[tuple[int, int]]:
    """``(source_bundle_id, row_count)`` of every bundle the server logged for ``source``."""
    async with harness.pg.connect() as conn:
        result = await conn.execute(text(
            "SELECT b.source_bundle_id, b.row_count FROM sync.bundle_log b"
            " JOIN sync.user_state u USING (user_pk)"
            " WHERE u.user_id = :u AND b.source_id = :s ORDER BY b.bundle_seq"
        ), {"u": user, "s": source})
        return [(int(r[0]), int(r[1])) for r in result]


async def outbox_state(device: Device) -> str:
    return str(await device.scalar("SELECT state FROM _sync_outbox_bundle"))


async def prepared_device(
    harness: Harness, transport: httpx.AsyncBaseTransport | None = None, **options: Any
) -> tuple[str, Device, set[uuid.UUID]]:
    """An attached device with three pending rows (two users and a post)."""
    user = new_user()
    device = await harness.device("device", user=user, transport=transport, **options)
    await device.attach()
    alice, bob, post = new_id(), new_id(), new_id()
    await device.execute_many([
        (INSERT_USER, (alice.bytes, "Alice", "alice@example.com")),
        (INSERT_USER, (bob.bytes, "Bob", "bob@example.com")),
        (INSERT_POST, (post.bytes, "T", "C", alice.bytes)),
    ])
    return user, device, {alice, bob}


async def assert_pushed_once(
    harness: Harness, user: str, device: Device, users: set[uuid.UUID], rows: int = 3
) -> None:
    assert await server_ids(harness, user, "users") == users
    assert await bundles_of(harness, user, device.c.runtime.source_id) == [(1, rows)]
    assert await device.dirty_count() == 0
    assert await device.outbox_count() == 0
    assert await outbox_state(device) == "none"
    assert await device.next_source_bundle_id() == 2
    status = await device.c.sync_status()
    assert not status.pending.has_pending_sync_data


async def test_crash_during_freeze_keeps_dirty_rows(harness: Harness) -> None:
    user, device, users = await prepared_device(harness)
    device.c.runtime.hooks.before_push_freeze = crash_hook("freeze")

    with pytest.raises(InjectedCrash):
        await device.c.sync()

    assert await device.dirty_count() == 3
    assert await device.outbox_count() == 0
    await device.restart()
    await device.attach()
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    await assert_pushed_once(harness, user, device, users)


async def test_crash_before_commit_resends_the_same_bundle(harness: Harness) -> None:
    user, device, users = await prepared_device(harness)
    device.c.runtime.hooks.before_push_commit = crash_hook("before commit")

    with pytest.raises(InjectedCrash):
        await device.c.sync()

    assert await outbox_state(device) == "prepared"
    assert await device.outbox_count() == 3
    assert await device.dirty_count() == 0
    assert await bundles_of(harness, user, device.c.runtime.source_id) == []
    network = LossyTransport()
    await device.restart(transport=network)
    await device.attach()

    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED

    assert network.count("POST", "/sync/push-sessions") == 1
    assert device.c.push_stats.sessions_created == 1
    await assert_pushed_once(harness, user, device, users)


async def test_crash_during_upload_resends_from_ordinal_zero(harness: Harness) -> None:
    network = LossyTransport()
    user, device, users = await prepared_device(
        harness, network, retry=NO_RETRY, upload_limit=1
    )
    chunks = 0

    def second_chunk(request: httpx.Request) -> bool:
        nonlocal chunks
        if request.url.path.endswith("/chunks"):
            chunks += 1
        return chunks == 2

    network.fail_before(second_chunk)
    with pytest.raises(RetryExhaustedError, match="injected"):
        await device.c.sync()
    assert await outbox_state(device) == "prepared"

    await device.restart(transport=LossyTransport(), retry=FAST_RETRY)
    await device.attach()
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert device.c.push_stats.chunks_uploaded == 3
    await assert_pushed_once(harness, user, device, users)


async def test_lost_commit_reply_then_restart_replays_without_a_duplicate(
    harness: Harness,
) -> None:
    network = LossyTransport()
    user, device, users = await prepared_device(harness, network, retry=NO_RETRY)
    network.drop_reply_after(is_commit)

    with pytest.raises(RetryExhaustedError, match="reply lost"):
        await device.c.sync()

    # The server committed; locally the outbox is still only prepared.
    assert await outbox_state(device) == "prepared"
    assert await server_ids(harness, user, "users") == users
    await device.restart(transport=LossyTransport())
    await device.attach()

    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED

    stats = device.c.push_stats
    assert (stats.sessions_created, stats.chunks_uploaded) == (0, 0)
    assert stats.committed_bundle_chunks_read == 1
    await assert_pushed_once(harness, user, device, users)
    assert await device.ids("users") == users


async def test_lost_commit_reply_is_retried_within_one_push(harness: Harness) -> None:
    network = LossyTransport()
    user, device, users = await prepared_device(harness, network, retry=FAST_RETRY)
    network.drop_reply_after(is_commit)

    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED

    assert network.dropped == [p for m, p in network.requests if m == "POST"
                               and p.endswith("/commit")]
    assert network.count("POST", "/sync/push-sessions") == 2  # second one: already_committed
    await assert_pushed_once(harness, user, device, users)


async def test_crash_after_committed_remote_before_replay(harness: Harness) -> None:
    user, device, _ = await prepared_device(harness)
    device.c.runtime.hooks.before_push_replay = crash_hook("before replay")

    with pytest.raises(InjectedCrash):
        await device.c.sync()

    assert await outbox_state(device) == "committed_remote"
    # A local edit made while the bundle waits for its replay must survive the replay.
    await device.execute("UPDATE users SET name = 'Edited later' WHERE name = 'Alice'")
    network = LossyTransport()
    await device.restart(transport=network)
    await device.attach()

    report = await device.c.push_pending()

    assert report.outcome is PushOutcome.COMMITTED
    stats = device.c.push_stats
    assert (stats.sessions_created, stats.chunks_uploaded,
            stats.committed_bundle_chunks_read) == (0, 0, 1)
    assert await bundles_of(harness, user, device.c.runtime.source_id) == [(1, 3)]
    assert await device.dirty_count() == 1
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert await bundles_of(harness, user, device.c.runtime.source_id) == [(1, 3), (2, 1)]
    names = {r["name"] for r in await harness.server_rows(user, "users", "name")}
    assert names == {"Edited later", "Bob"}
    assert await device.dirty_count() == await device.outbox_count() == 0


async def test_crash_while_fetching_the_committed_bundle(harness: Harness) -> None:
    network = LossyTransport()
    user, device, users = await prepared_device(harness, network, retry=NO_RETRY)
    network.fail_before(lambda r: r.url.path.startswith("/sync/committed-bundles/"))

    with pytest.raises(RetryExhaustedError, match="injected"):
        await device.c.sync()

    assert await outbox_state(device) == "committed_remote"
    await device.restart(transport=LossyTransport())
    await device.attach()
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert device.c.push_stats.sessions_created == 0
    await assert_pushed_once(harness, user, device, users)


async def test_committed_bundle_pruned_before_replay_rebuilds_from_snapshot(
    harness: Harness,
) -> None:
    user, device, users = await prepared_device(harness)
    peer = await harness.device("peer", user=user)
    await peer.attach()
    device.c.runtime.hooks.before_push_replay = crash_hook("before replay")
    with pytest.raises(InjectedCrash):
        await device.c.sync()
    # History moves on and the device's committed bundle falls below the retention floor.
    carol = new_id()
    await peer.execute(INSERT_USER, (carol.bytes, "Carol", "carol@example.com"))
    await peer.c.sync()
    await harness.set_retention_floor(user, 2)
    await device.restart()
    await device.attach()

    report = await device.c.sync()

    assert report.push_outcome is PushOutcome.COMMITTED
    assert await device.ids("users") == {*users, carol}
    assert await bundles_of(harness, user, device.c.runtime.source_id) == [(1, 3)]
    assert await device.outbox_count() == 0
    assert await device.next_source_bundle_id() == 2
    assert await device.c.last_bundle_seq_seen() == 2
    assert not (await device.c.source_info()).source_recovery_required
    # And it keeps pushing under the same source.
    await device.execute(INSERT_USER, (new_id().bytes, "Dan", "dan@example.com"))
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert [b for b, _ in await bundles_of(harness, user, device.c.runtime.source_id)] == [1, 2]


async def test_create_request_lost_then_restart(harness: Harness) -> None:
    network = LossyTransport()
    user, device, users = await prepared_device(harness, network, retry=NO_RETRY)
    network.drop_reply_after(is_push_create)

    with pytest.raises(RetryExhaustedError, match="reply lost"):
        await device.c.sync()

    await device.restart(transport=LossyTransport())
    await device.attach()
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    await assert_pushed_once(harness, user, device, users)


async def test_sync_sends_rows_written_behind_a_frozen_outbox(harness: Harness) -> None:
    # A failed push leaves the outbox frozen; the user keeps writing. One sync() must send the
    # frozen bundle *and* the newer rows, then pull, instead of pushing the outbox alone and
    # refusing the pull because of rows that were waiting before the call.
    user, device, users = await prepared_device(harness)
    device.c.runtime.hooks.before_push_commit = crash_hook("before commit")
    with pytest.raises(InjectedCrash):
        await device.c.sync()
    assert await outbox_state(device) == "prepared"
    device.c.runtime.hooks.before_push_commit = None
    carol = new_id()
    await device.execute_many([(INSERT_USER, (carol.bytes, "Carol", "carol@example.com"))])
    assert await device.dirty_count() == 1

    report = await device.c.sync()

    assert report.push_outcome is PushOutcome.COMMITTED
    assert report.remote_outcome is not None
    assert await server_ids(harness, user, "users") == users | {carol}
    assert await bundles_of(harness, user, device.c.runtime.source_id) == [(1, 3), (2, 1)]
    assert await device.dirty_count() == 0
    assert await device.outbox_count() == 0
    assert not (await device.c.sync_status()).pending.has_pending_sync_data
