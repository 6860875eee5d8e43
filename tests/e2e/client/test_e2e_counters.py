"""SyncClient.sync_status() counters and dirty-queue depth, against the live reference server."""

from __future__ import annotations

import pytest

from oversync_sa.client.conflicts import ClientWinsResolver
from oversync_sa.client.results import PushOutcome, RemoteSyncOutcome, SyncCounters
from tests.e2e.client._support import INSERT_USER, Harness, new_id, new_user

pytestmark = pytest.mark.postgres


async def test_counters_follow_pushes_pulls_and_the_dirty_queue(harness: Harness) -> None:
    phone = await harness.device("phone", user=new_user())
    await phone.attach()
    status = await phone.c.sync_status()
    assert (status.counters, status.dirty_queue_depth) == (SyncCounters(), 0)

    for n in range(3):
        await phone.execute(INSERT_USER, (new_id().bytes, f"n{n}", f"n{n}@example.com"))
    status = await phone.c.sync_status()
    assert status.dirty_queue_depth == 3 == await phone.dirty_count()
    assert status.counters == SyncCounters()

    report = await phone.c.sync()
    assert report.push_outcome is PushOutcome.COMMITTED
    assert report.status is not None
    assert report.status.counters == SyncCounters(pushes=1, pulls=1)
    assert report.status.dirty_queue_depth == 0

    # Nothing to push: the push is not counted, the (empty) pull is.
    again = await phone.c.sync()
    assert (again.push_outcome, again.remote_outcome) == (
        PushOutcome.NO_CHANGE, RemoteSyncOutcome.ALREADY_AT_TARGET
    )
    assert (await phone.c.sync_status()).counters == SyncCounters(pushes=1, pulls=2)

    # In memory per client instance: a restarted client starts from zero.
    await phone.restart()
    await phone.attach()
    assert (await phone.c.sync_status()).counters == SyncCounters()


async def test_conflicts_and_rebuilds_are_counted(harness: Harness) -> None:
    user = new_user()
    a = await harness.device("a", user=user)
    b = await harness.device("b", user=user, resolver=ClientWinsResolver())
    await a.attach()
    await b.attach()
    row = new_id()
    await a.execute(INSERT_USER, (row.bytes, "Original", "o@example.com"))
    await a.c.sync()
    await b.c.sync()
    await a.execute("UPDATE users SET name = 'From A' WHERE id = ?", (row.bytes,))
    await a.c.sync()
    await b.execute("UPDATE users SET name = 'From B' WHERE id = ?", (row.bytes,))

    report = await b.c.sync()

    assert report.push_outcome is PushOutcome.COMMITTED  # client wins: B's edit went up
    status = await b.c.sync_status()
    assert status.counters.conflicts_resolved == 1
    assert status.counters.pushes == 1
    assert status.dirty_queue_depth == 0

    await b.c.rebuild()
    assert (await b.c.sync_status()).counters.rebuilds == 1

    # Pruned history: the pull turns into a rebuild, counted as such and not as a pull.
    pulls_before = (await a.c.sync_status()).counters.pulls
    head = int(await harness.server_scalar(
        "SELECT next_bundle_seq - 1 FROM sync.user_state WHERE user_id = :u", u=user
    ))
    await harness.set_retention_floor(user, head)
    await a.execute(INSERT_USER, (new_id().bytes, "Late", "late@example.com"))
    await a.c.push_pending()
    await b.execute(INSERT_USER, (new_id().bytes, "Later", "later@example.com"))
    await b.c.sync()
    await harness.set_retention_floor(user, head + 2)  # A's checkpoint is now below the floor
    pulled = await a.c.pull_to_stable()
    assert pulled.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    counters = (await a.c.sync_status()).counters
    assert (counters.rebuilds, counters.pulls) == (1, pulls_before)
    assert counters.pushes == 3  # the first row, the edit, "Late"
