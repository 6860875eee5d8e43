"""Each fault of :mod:`oversync_sa.testing.faults` against the real server and the real client.

What must hold under every fault: the server ends with exactly the bundles the client meant to
push (no duplicate, none lost), the devices converge, and the injector's log proves the fault
really happened (a fault test whose fault never fired would pass vacuously).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from oversync_sa.client.results import PushOutcome, RemoteSyncOutcome
from oversync_sa.errors import WireError
from oversync_sa.testing.faults import (
    FaultAction,
    FaultInjector,
    FaultTransport,
    delay,
    drop_request,
    drop_response,
    duplicate,
    fail_status,
    hold,
)
from tests.e2e.client._support import (
    FAST_RETRY,
    INSERT_POST,
    INSERT_USER,
    NO_RETRY,
    Device,
    Harness,
    new_id,
    new_user,
    server_ids,
)

pytestmark = pytest.mark.postgres

UPDATE_USER = "UPDATE users SET name = ? WHERE id = ?"
COMMIT = "/sync/push-sessions/*/commit"
CHUNKS = "/sync/push-sessions/*/chunks"
CREATE = "/sync/push-sessions"


async def server_bundles(harness: Harness, user: str) -> list[tuple[str, int, int]]:
    """``(source_id, source_bundle_id, row_count)`` of every bundle of ``user``, in seq order."""
    async with harness.pg.connect() as conn:
        result = await conn.execute(text(
            "SELECT b.source_id, b.source_bundle_id, b.row_count FROM sync.bundle_log b"
            " JOIN sync.user_state u USING (user_pk) WHERE u.user_id = :u ORDER BY b.bundle_seq"
        ), {"u": user})
        return [(str(r[0]), int(r[1]), int(r[2])) for r in result]


async def write_three(device: Device) -> set[uuid.UUID]:
    """Two users and a post of the first, in one transaction: one three-row bundle."""
    alice, bob = new_id(), new_id()
    await device.execute_many([
        (INSERT_USER, (alice.bytes, "Alice", "alice@example.com")),
        (INSERT_USER, (bob.bytes, "Bob", "bob@example.com")),
        (INSERT_POST, (new_id().bytes, "T", "C", alice.bytes)),
    ])
    return {alice, bob}


async def attached(harness: Harness, faults: FaultTransport, **options: object) -> Device:
    device = await harness.device("device", user=new_user(), transport=faults, **options)
    await device.attach()
    return device


async def assert_one_bundle(harness: Harness, device: Device, users: set[uuid.UUID]) -> None:
    assert await server_bundles(harness, device.user) == [(device.c.runtime.source_id, 1, 3)]
    assert await server_ids(harness, device.user, "users") == users
    assert await device.dirty_count() == 0
    assert await device.outbox_count() == 0
    assert not (await device.c.sync_status()).pending.has_pending_sync_data


async def test_lost_commit_reply_is_answered_already_committed(harness: Harness) -> None:
    faults = FaultTransport([drop_response("POST", COMMIT, nth=1)])
    device = await attached(harness, faults, retry=FAST_RETRY)
    users = await write_three(device)

    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED

    assert [e.action for e in faults.log] == [FaultAction.DROP_RESPONSE]
    # The retry re-created the session for the same tuple; the server said already_committed,
    # so nothing was uploaded again and the committed bundle was fetched and replayed.
    assert faults.injector.count("POST", CREATE) == 2
    assert faults.injector.count("POST", CHUNKS) == 1
    assert faults.injector.count("POST", COMMIT) == 1
    assert faults.injector.count("GET", "/sync/committed-bundles/1/rows") == 1
    await assert_one_bundle(harness, device, users)


async def test_lost_commit_reply_recovers_on_the_next_push(harness: Harness) -> None:
    faults = FaultTransport([drop_response("POST", COMMIT, nth=1)])
    device = await attached(harness, faults, retry=NO_RETRY)
    users = await write_three(device)

    with pytest.raises(Exception, match="response lost"):
        await device.c.push_pending()
    assert await device.outbox_count() == 3  # frozen, committed remotely, not yet replayed

    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert faults.injector.count("POST", CHUNKS) == 1  # the second push uploaded nothing
    await assert_one_bundle(harness, device, users)


async def test_dropped_chunk_is_retried(harness: Harness) -> None:
    # upload_limit=1: three chunks; the second one is lost before it leaves the device.
    faults = FaultTransport([drop_request("POST", CHUNKS, nth=2)])
    device = await attached(harness, faults, retry=FAST_RETRY, upload_limit=1)
    users = await write_three(device)

    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED

    assert [(e.action, e.path.endswith("/chunks")) for e in faults.log] == [
        (FaultAction.DROP_REQUEST, True)
    ]
    assert faults.injector.count("POST", CHUNKS, sent_only=True) >= 3
    assert faults.injector.count("POST", COMMIT) == 1
    await assert_one_bundle(harness, device, users)


async def test_duplicated_commit_gets_404_and_adds_nothing(harness: Harness) -> None:
    faults = FaultTransport([duplicate("POST", COMMIT)])
    device = await attached(harness, faults, retry=FAST_RETRY)
    users = await write_three(device)

    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED

    # The session was deleted by the first commit: the second finds nothing to commit.
    assert [(e.action, e.detail) for e in faults.log] == [(FaultAction.DUPLICATE, "200,404")]
    await assert_one_bundle(harness, device, users)


async def test_client_seeing_only_the_duplicate_commit_404_recovers(harness: Harness) -> None:
    """A proxy that retried the commit and returned the retry's 404 to the client.

    The bundle is committed, but the client was told the session does not exist. A 404 is final,
    so that push fails; the outbox stays frozen and the next push re-creates the session for
    the same tuple and gets ``already_committed`` - still exactly one bundle.
    """
    faults = FaultTransport([duplicate("POST", COMMIT, reply="last", nth=1)])
    device = await attached(harness, faults, retry=FAST_RETRY)
    users = await write_three(device)

    with pytest.raises(WireError) as raised:
        await device.c.push_pending()
    assert raised.value.code == "push_session_not_found"
    assert [(e.action, e.detail) for e in faults.log] == [(FaultAction.DUPLICATE, "200,404")]

    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    await assert_one_bundle(harness, device, users)


@pytest.mark.parametrize("reply", ["first", "last"])
async def test_duplicated_chunk_and_create_leave_one_bundle(harness: Harness, reply: str) -> None:
    faults = FaultTransport([
        duplicate("POST", CREATE, nth=1, reply=reply),  # type: ignore[arg-type]
        duplicate("POST", CHUNKS, nth=1, reply=reply),  # type: ignore[arg-type]
    ])
    device = await attached(harness, faults, retry=FAST_RETRY, upload_limit=2)
    users = await write_three(device)

    # A duplicated create replaces the session (SERVER.md §5.1): with the first reply the client
    # holds a stale push_id and its push fails with a final 404. A duplicated chunk answered by
    # its copy is a 409 push_chunk_out_of_order (the first copy advanced the ordinal). Both are
    # final errors for that push (CLIENT.md Appendix A); a later push must still end with
    # exactly one bundle.
    refused: list[str] = []
    for _ in range(3):
        try:
            if (await device.c.push_pending()).outcome is PushOutcome.COMMITTED:
                break
        except WireError as exc:
            refused.append(exc.code)
    assert set(refused) <= {"push_session_not_found", "push_chunk_out_of_order"}
    assert {e.action for e in faults.log} == {FaultAction.DUPLICATE}
    await assert_one_bundle(harness, device, users)


async def test_503_on_pull_is_retried(harness: Harness) -> None:
    faults = FaultTransport([fail_status(503, "GET", "/sync/pull", nth=1)])
    device = await attached(harness, faults, retry=FAST_RETRY)
    await write_three(device)

    report = await device.c.sync()

    assert report.remote_outcome is not RemoteSyncOutcome.SKIPPED_PAUSED
    assert [e.action for e in faults.log] == [FaultAction.FAIL_STATUS]
    assert faults.injector.count("GET", "/sync/pull") >= 2


async def test_delays_keep_per_device_order_and_converge(harness: Harness) -> None:
    """Random delays on every request of two devices: the last write still wins everywhere,
    a device's bundles keep their local order on the server, checkpoints never go back."""
    user = new_user()
    injector = FaultInjector([delay(0.03, rate=0.5)], seed=11)
    a = await harness.device("a", user=user, transport=injector.transport(label="a"))
    b = await harness.device("b", user=user, transport=injector.transport(label="b"))
    await a.attach()
    await b.attach()
    row = new_id()
    await a.execute(INSERT_USER, (row.bytes, "v0", "x@example.com"))
    await a.c.sync()
    seen: list[int] = []
    for version in range(1, 6):
        await a.execute(UPDATE_USER, (f"v{version}", row.bytes))
        await a.c.push_pending()
        await b.c.pull_to_stable()
        seen.append(await b.c.last_bundle_seq_seen())
        assert await b.table("users", "name") == {row: (f"v{version}",)}

    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    source = a.c.runtime.source_id
    assert [sbid for src, sbid, _ in await server_bundles(harness, user) if src == source] == [
        1, 2, 3, 4, 5, 6
    ]
    assert injector.events(FaultAction.DELAY), "no delay was injected"


async def test_held_commit_is_overtaken_and_both_converge(harness: Harness) -> None:
    """Device a's commit is parked until b's whole push has gone through: b's bundle gets the
    lower sequence number, and both devices still end with both writes."""
    user = new_user()
    injector = FaultInjector([
        hold("POST", COMMIT, label="a", nth=1, release_after=3, timeout=10)
    ])
    a = await harness.device("a", user=user, transport=injector.transport(label="a"))
    b = await harness.device("b", user=user, transport=injector.transport(label="b"))
    await a.attach()
    await b.attach()
    from_a, from_b = new_id(), new_id()
    await a.execute(INSERT_USER, (from_a.bytes, "A", "a@example.com"))
    await b.execute(INSERT_USER, (from_b.bytes, "B", "b@example.com"))

    pushing_a = asyncio.create_task(a.c.push_pending())
    while injector.count("POST", COMMIT) == 0:  # noqa: ASYNC110 - a's commit reached the hold
        await asyncio.sleep(0.01)
    assert (await b.c.push_pending()).outcome is PushOutcome.COMMITTED  # create, chunk, commit
    assert (await pushing_a).outcome is PushOutcome.COMMITTED

    [event] = injector.events(FaultAction.HOLD)
    assert event.detail.startswith("released")
    sources = [src for src, _, _ in await server_bundles(harness, user)]
    assert sources == [b.c.runtime.source_id, a.c.runtime.source_id]
    for device in (a, b):
        await device.c.sync()
        assert await device.ids("users") == {from_a, from_b}
