"""A device that loses its initialization lease keeps every row it was seeding.

``initialize_local`` lets a device seed the user's empty scope with its local rows. If its lease
ends before the seed push commits (it expired, and possibly another device seeded the scope
meanwhile), the server rejects the seed and the device drops the lease. The rows it was seeding
(frozen in the outbox) and the edits made while attached belong to that user: they must survive
the next attach - as the new seed, or as ordinary changes pushed over the hydrated server state -
never be discarded by the ``remote_authoritative`` replace (the Go client drops them silently,
CLIENT.md §12.29).
"""

from __future__ import annotations

import uuid

import pytest

from oversync_sa.client.conflicts import ClientWinsResolver, ConflictResolver
from oversync_sa.client.errors import (
    AttachLocalStateConflictError,
    AttachRequiredError,
    RetryExhaustedError,
)
from oversync_sa.client.results import AttachOutcome, DetachOutcome, PushOutcome
from oversync_sa.errors import InitializationExpiredError, PushSessionInvalidError
from tests.e2e.client._support import (
    INSERT_USER,
    NO_RETRY,
    Device,
    Harness,
    LossyTransport,
    is_push_create,
    new_id,
    new_user,
    server_ids,
)

pytestmark = pytest.mark.postgres

UPDATE_NAME = "UPDATE users SET name = ? WHERE id = ?"


async def expire_lease(harness: Harness, user: str) -> None:
    """Move the scope's lease into the past: the next lease check resets it (SERVER.md §4.1)."""
    changed = await harness.server_execute(
        "UPDATE sync.scope_state s SET lease_expires_at = now() - interval '1 second'"
        " FROM sync.user_state u WHERE u.user_pk = s.user_pk AND u.user_id = :u"
        " AND s.state_code = 1",
        u=user,
    )
    assert changed == 1, "the scope was not initializing"


async def scope_state(harness: Harness, user: str) -> int:
    return int(await harness.server_scalar(
        "SELECT s.state_code FROM sync.scope_state s JOIN sync.user_state u USING (user_pk)"
        " WHERE u.user_id = :u",
        u=user,
    ))


async def names(device: Device) -> dict[uuid.UUID, str]:
    return {k: v[0] for k, v in (await device.table("users", "name")).items()}


async def server_names(harness: Harness, user: str) -> dict[uuid.UUID, str]:
    return {r["id"]: r["name"] for r in await harness.server_rows(user, "users", "id, name")}


async def seed_then_lose_to_other_device(
    harness: Harness, user: str, *, resolver: ConflictResolver | None = None,
    shared: uuid.UUID | None = None,
) -> tuple[Device, Device, uuid.UUID, uuid.UUID, uuid.UUID]:
    """Device ``late`` wins the lease, lets it expire, ``winner`` seeds the scope, and ``late``'s
    seed push is rejected. Returns (late, winner, late's anonymous row, late's attached row,
    winner's row). ``shared``, when given, is written by both devices (a key collision)."""
    late = await harness.device("late", user=user, resolver=resolver)
    seeded, attached_edit, theirs = new_id(), new_id(), new_id()
    await late.execute(INSERT_USER, (seeded.bytes, "late-anonymous", "l1@example.com"))
    if shared is not None:
        await late.execute(INSERT_USER, (shared.bytes, "late-shared", "ls@example.com"))
    assert (await late.attach()).outcome is AttachOutcome.SEEDED_FROM_LOCAL
    # Written by the signed-in user while the seed is pending: not anonymous data.
    await late.execute(INSERT_USER, (attached_edit.bytes, "late-attached", "l2@example.com"))

    await expire_lease(harness, user)
    winner = await harness.device("winner", user=user)
    await winner.execute(INSERT_USER, (theirs.bytes, "winner", "w@example.com"))
    if shared is not None:
        await winner.execute(INSERT_USER, (shared.bytes, "winner-shared", "ws@example.com"))
    assert (await winner.attach()).outcome is AttachOutcome.SEEDED_FROM_LOCAL
    assert (await winner.c.push_pending()).outcome is PushOutcome.COMMITTED
    assert await scope_state(harness, user) == 2  # INITIALIZED by the winner

    # The late seed is refused: the scope no longer accepts its initialization id.
    with pytest.raises(PushSessionInvalidError):
        await late.c.push_pending()
    return late, winner, seeded, attached_edit, theirs


async def test_lost_seed_is_pushed_over_the_other_devices_seed(harness: Harness) -> None:
    user = new_user()
    late, winner, seeded, attached_edit, theirs = await seed_then_lose_to_other_device(
        harness, user
    )
    # Lease dropped: the device is disconnected, the unsent seed is queued again as dirty rows.
    with pytest.raises(AttachRequiredError):
        await late.c.push_pending()
    assert await late.outbox_count() == 0
    assert await late.dirty_count() == 2
    pending = await late.c.pending_sync_status()
    assert pending.pending_row_count == 2
    # Those rows belong to the user whose lease was lost: detach must not silently wipe them.
    assert pending.blocks_detach
    assert (await late.c.detach()).outcome is DetachOutcome.BLOCKED_UNSYNCED_DATA
    # What the device remembers about the lost lease is durable, not just in memory.
    await late.restart()

    reattached = await late.attach()

    # The scope is the winner's now; the late device hydrates from it *and keeps its rows*.
    assert reattached.outcome is AttachOutcome.USED_REMOTE_STATE
    assert reattached.restore is not None
    assert reattached.restore.row_count == 1
    assert await late.ids("users") == {seeded, attached_edit, theirs}
    assert await late.dirty_count() == 2
    report = await late.c.sync()
    assert report.push_outcome is PushOutcome.COMMITTED
    assert await server_ids(harness, user, "users") == {seeded, attached_edit, theirs}
    assert await late.dirty_count() == 0
    await winner.c.sync()
    assert await names(winner) == await server_names(harness, user) == {
        seeded: "late-anonymous", attached_edit: "late-attached", theirs: "winner",
    }


@pytest.mark.parametrize(
    ("resolver", "expected"),
    [(None, "winner-shared"), (ClientWinsResolver(), "late-shared")],
    ids=["server-wins", "client-wins"],
)
async def test_lost_seed_colliding_with_the_winners_seed_goes_to_the_resolver(
    harness: Harness, resolver: ConflictResolver | None, expected: str
) -> None:
    user, shared = new_user(), new_id()
    late, winner, seeded, attached_edit, theirs = await seed_then_lose_to_other_device(
        harness, user, resolver=resolver, shared=shared
    )

    assert (await late.attach()).outcome is AttachOutcome.USED_REMOTE_STATE
    assert (await late.c.sync()).push_outcome is PushOutcome.COMMITTED

    assert await server_names(harness, user) == {
        seeded: "late-anonymous", attached_edit: "late-attached", theirs: "winner",
        shared: expected,
    }
    assert (await names(late))[shared] == expected
    assert await late.dirty_count() == await late.outbox_count() == 0
    await winner.c.sync()
    assert await names(winner) == await server_names(harness, user)


async def test_expired_seed_reseeds_the_still_empty_scope(harness: Harness) -> None:
    user = new_user()
    device = await harness.device("slow", user=user)
    rows = [new_id(), new_id()]
    await device.execute_many(
        (INSERT_USER, (r.bytes, f"slow-{i}", f"s{i}@example.com")) for i, r in enumerate(rows)
    )
    assert (await device.attach()).outcome is AttachOutcome.SEEDED_FROM_LOCAL
    await expire_lease(harness, user)

    with pytest.raises(InitializationExpiredError):
        await device.c.push_pending()
    assert await device.outbox_count() == 0
    assert await device.dirty_count() == 2

    # Nobody else seeded: the device reports its rows, wins a new lease and seeds as intended
    # (Go reports itself empty here and the scope is initialized as "empty" first).
    assert (await device.attach()).outcome is AttachOutcome.SEEDED_FROM_LOCAL
    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED
    assert await server_ids(harness, user, "users") == set(rows)
    state = await harness.server_scalar(
        "SELECT s.initialized_by_source_id FROM sync.scope_state s"
        " JOIN sync.user_state u USING (user_pk) WHERE u.user_id = :u",
        u=user,
    )
    assert state == device.c.runtime.source_id


async def test_newer_edits_win_over_the_requeued_seed(harness: Harness) -> None:
    """An edit made after the seed was frozen is newer than the frozen intent: requeueing the
    seed must not roll it back."""
    user = new_user()
    network = LossyTransport()
    device = await harness.device("edited", user=user, transport=network, retry=NO_RETRY)
    row = new_id()
    await device.execute(INSERT_USER, (row.bytes, "frozen", "e@example.com"))
    assert (await device.attach()).outcome is AttachOutcome.SEEDED_FROM_LOCAL
    network.fail_before(is_push_create)
    with pytest.raises(RetryExhaustedError, match="injected"):
        await device.c.push_pending()
    assert await device.outbox_count() == 1
    await device.execute(UPDATE_NAME, ("edited-after-freeze", row.bytes))
    await expire_lease(harness, user)

    with pytest.raises(InitializationExpiredError):
        await device.c.push_pending()

    assert await device.outbox_count() == 0
    assert await device.dirty_count() == 1
    assert (await device.attach()).outcome is AttachOutcome.SEEDED_FROM_LOCAL
    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED
    assert await server_names(harness, user) == {row: "edited-after-freeze"}


async def test_lost_seed_is_not_handed_to_another_user(harness: Harness) -> None:
    user, other = new_user(), new_user("other")
    late, _winner, seeded, attached_edit, _theirs = await seed_then_lose_to_other_device(
        harness, user
    )

    with pytest.raises(AttachLocalStateConflictError, match=f"attach '{user}' again"):
        await late.attach(other)

    assert await late.ids("users") == {seeded, attached_edit}
    assert await late.dirty_count() == 2
    assert await server_ids(harness, other, "users") == set()
    # The rightful user can still take them over.
    assert (await late.attach(user)).outcome is AttachOutcome.USED_REMOTE_STATE
    assert (await late.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert {seeded, attached_edit} <= await server_ids(harness, user, "users")
