"""The process-local hub (§7.4): coalescing, stale events, isolation, cleanup. No database."""

from __future__ import annotations

import asyncio

import pytest

from oversync_sa.server.watch import BundleChangeHub, parse_notification
from oversync_sa.wire import BundleChangeEvent


def ev(seq: int, source: str = "", source_bundle_id: int = 0) -> BundleChangeEvent:
    return BundleChangeEvent(bundle_seq=seq, source_id=source, source_bundle_id=source_bundle_id)


async def test_events_coalesce_to_the_newest_and_stale_ones_are_dropped() -> None:
    hub = BundleChangeHub()
    sub = hub.subscribe(1, after_bundle_seq=5)
    hub.publish(1, ev(5))  # not past the checkpoint
    hub.publish(1, ev(3))
    hub.publish(1, ev(0))
    hub.publish(1, ev(-1))
    assert sub.last_seq == 5
    hub.publish(1, ev(7, "a", 1))
    hub.publish(1, ev(9, "b", 2))  # replaces the unread 7
    hub.publish(1, ev(8, "c", 3))  # older than what was accepted: dropped
    assert await sub.receive() == ev(9, "b", 2)
    assert sub.last_seq == 9
    hub.publish(1, ev(9))
    hub.publish(1, ev(10))
    assert await sub.receive() == ev(10)


async def test_receive_waits_for_a_publish_and_is_cancellation_safe() -> None:
    hub = BundleChangeHub()
    sub = hub.subscribe(1, 0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await sub.receive()
    waiter = asyncio.create_task(sub.receive())
    await asyncio.sleep(0)
    hub.publish(1, ev(1))
    assert await waiter == ev(1)
    hub.publish(1, ev(2))
    assert await anext(aiter(sub)) == ev(2)


async def test_subscribers_are_isolated_per_user_and_each_gets_its_own_copy() -> None:
    hub = BundleChangeHub()
    alice_1, alice_2 = hub.subscribe(1, 0), hub.subscribe(1, 4)
    bob = hub.subscribe(2, 0)
    hub.publish(1, ev(3))
    assert await alice_1.receive() == ev(3)
    assert alice_2.last_seq == 4  # its own checkpoint filtered the event
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await bob.receive()
    assert hub.subscriber_count(1) == 2
    assert hub.subscriber_count(2) == 1
    assert sorted(hub.active_user_pks()) == [1, 2]
    hub.publish(3, ev(1))  # nobody listens: nothing happens


async def test_close_unregisters_ends_iteration_and_is_idempotent() -> None:
    hub = BundleChangeHub()
    sub = hub.subscribe(1, 0)
    other = hub.subscribe(1, 0)
    hub.publish(1, ev(1))
    waiter = asyncio.create_task(anext(aiter(other), None))
    await asyncio.sleep(0)
    sub.close()
    sub.close()
    assert sub.closed
    assert await sub.receive() is None  # the buffered event is dropped
    assert hub.subscriber_count(1) == 1
    assert await waiter == ev(1)
    async with other:
        pass
    assert hub.subscriber_count(1) == 0
    assert hub.active_user_pks() == []
    hub.publish(1, ev(2))  # a closed subscriber takes nothing
    assert other.last_seq == 1


async def test_closing_the_hub_wakes_and_ends_every_subscriber() -> None:
    hub = BundleChangeHub()
    subs = [hub.subscribe(1, 0), hub.subscribe(2, 0)]
    waiters = [asyncio.create_task(s.receive()) for s in subs]
    await asyncio.sleep(0)
    hub.close()
    assert await asyncio.gather(*waiters) == [None, None]
    assert [e async for e in subs[0]] == []
    assert hub.closed
    late = hub.subscribe(1, 0)
    assert late.closed
    assert hub.subscriber_count(1) == 0


def test_notification_payload_validation() -> None:
    full = parse_notification(
        '{"user_pk":3,"bundle_seq":9,"source_id":"dev","source_bundle_id":2,"extra":true}'
    )
    assert (full.user_pk, full.bundle_seq, full.source_id, full.source_bundle_id) == (
        3, 9, "dev", 2,
    )
    bare = parse_notification('{"user_pk":3,"bundle_seq":9}')
    assert (bare.source_id, bare.source_bundle_id) == ("", 0)
    for bad in (
        "not json",
        '{"user_pk":0,"bundle_seq":1}',
        '{"user_pk":1,"bundle_seq":0}',
        '{"user_pk":-1,"bundle_seq":5}',
        '{"user_pk":"1","bundle_seq":5}',
        '{"bundle_seq":5}',
        "[]",
    ):
        with pytest.raises(ValueError, match="bundle change notification"):
            parse_notification(bad)
