"""First attach over real HTTP: empty scope, populated scope, local seed, resume, user switch."""

from __future__ import annotations

import pytest

from oversync_sa.client.errors import AttachBindingConflictError, RetryExhaustedError
from oversync_sa.client.results import (
    AttachOutcome,
    AttachStatus,
    AuthorityStatus,
    DetachOutcome,
    PushOutcome,
    RemoteSyncOutcome,
)
from tests.e2e.client._support import (
    INSERT_POST,
    INSERT_USER,
    NO_RETRY,
    Harness,
    LossyTransport,
    new_id,
    new_user,
    server_ids,
)

pytestmark = pytest.mark.postgres


async def test_first_attach_on_empty_scope_starts_empty_and_pushes(harness: Harness) -> None:
    user = new_user()
    device = await harness.device("a", user=user)
    # The device's engine created the tables before SyncClient.create prepared it: the pooled
    # connection from then must have been configured too (FKs enforced, WAL).
    assert await device.rows("PRAGMA foreign_keys") == [(1,)]
    assert await device.rows("PRAGMA journal_mode") == [("wal",)]

    attached = await device.attach()

    assert (attached.status, attached.outcome) == (
        AttachStatus.CONNECTED, AttachOutcome.STARTED_EMPTY
    )
    assert attached.sync_status is not None
    assert attached.sync_status.authority is AuthorityStatus.AUTHORITATIVE_EMPTY
    alice = new_id()
    await device.execute(INSERT_USER, (alice.bytes, "Alice", "alice@example.com"))

    report = await device.c.sync()

    assert report.push_outcome is PushOutcome.COMMITTED
    assert await server_ids(harness, user, "users") == {alice}
    assert await device.c.last_bundle_seq_seen() == 1
    status = await device.c.sync_status()
    assert status.authority is AuthorityStatus.AUTHORITATIVE_MATERIALIZED
    assert not status.pending.has_pending_sync_data


async def test_first_attach_on_populated_scope_hydrates_from_snapshot(harness: Harness) -> None:
    user = new_user()
    writer = await harness.device("writer", user=user)
    await writer.attach()
    people = [new_id() for _ in range(5)]
    await writer.execute_many(
        (INSERT_USER, (p.bytes, f"P{i}", f"p{i}@example.com")) for i, p in enumerate(people)
    )
    await writer.c.sync()
    post = new_id()
    await writer.execute(INSERT_POST, (post.bytes, "Hello", "body", people[0].bytes))
    await writer.c.sync()

    # A second device of the same user has pre-existing anonymous rows: remote_authoritative
    # replaces them with the server's state.
    reader = await harness.device("reader", user=user)
    stray = new_id()
    await reader.execute(INSERT_USER, (stray.bytes, "Stray", "stray@example.com"))

    attached = await reader.attach()

    assert attached.outcome is AttachOutcome.USED_REMOTE_STATE
    assert attached.restore is not None
    assert attached.restore.row_count == 6
    assert attached.restore.bundle_seq == 2
    assert await reader.ids("users") == set(people)
    assert await reader.table("posts", "title, author_id") == {
        post: ("Hello", people[0].bytes)
    }
    assert await reader.dirty_count() == 0
    assert await reader.c.last_bundle_seq_seen() == 2
    # The hydrated device is a normal peer afterwards.
    assert (await reader.c.sync()).remote_outcome is RemoteSyncOutcome.ALREADY_AT_TARGET
    assert stray not in await server_ids(harness, user, "users")


async def test_first_attach_with_local_rows_seeds_the_server(harness: Harness) -> None:
    user = new_user()
    device = await harness.device("seed", user=user)
    # Written before the first attach: anonymous, captured by the triggers.
    rows = [new_id() for _ in range(3)]
    await device.execute_many(
        (INSERT_USER, (r.bytes, f"U{i}", f"u{i}@example.com")) for i, r in enumerate(rows)
    )
    assert (await device.c.pending_sync_status()).pending_row_count == 3

    attached = await device.attach()

    assert attached.outcome is AttachOutcome.SEEDED_FROM_LOCAL
    assert attached.sync_status is not None
    assert attached.sync_status.authority is AuthorityStatus.PENDING_LOCAL_SEED
    report = await device.c.sync()
    assert report.push_outcome is PushOutcome.COMMITTED
    assert await server_ids(harness, user, "users") == set(rows)
    status = await device.c.sync_status()
    assert status.authority is AuthorityStatus.AUTHORITATIVE_MATERIALIZED
    assert status.pending.pending_row_count == 0
    state = await harness.server_scalar(
        "SELECT s.state_code FROM sync.scope_state s JOIN sync.user_state u USING (user_pk)"
        " WHERE u.user_id = :u",
        u=user,
    )
    assert state == 2  # INITIALIZED

    # A second device now sees a populated scope.
    other = await harness.device("other", user=user)
    assert (await other.attach()).outcome is AttachOutcome.USED_REMOTE_STATE
    assert await other.ids("users") == set(rows)


async def test_restart_resumes_attached_state_without_network(harness: Harness) -> None:
    user = new_user()
    device = await harness.device("resume", user=user)
    await device.attach()
    alice = new_id()
    await device.execute(INSERT_USER, (alice.bytes, "Alice", "a@example.com"))
    source = device.c.runtime.source_id

    network = LossyTransport()
    await device.restart(transport=network)
    resumed = await device.c.attach(user)

    assert resumed.outcome is AttachOutcome.RESUMED_ATTACHED_STATE
    assert device.c.runtime.source_id == source
    assert network.requests == []
    # The offline write survived the restart and still syncs.
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert await server_ids(harness, user, "users") == {alice}


async def test_detach_then_attach_another_user_leaks_nothing(harness: Harness) -> None:
    first, second = new_user("first"), new_user("second")
    # The second user's scope already has history, so its bundle seqs overlap the first's.
    other = await harness.device("other", user=second)
    await other.attach()
    bobs = [new_id() for _ in range(2)]
    for bob in bobs:
        await other.execute(INSERT_USER, (bob.bytes, "Bob", "b@example.com"))
        await other.c.sync()

    device = await harness.device("shared", user=first)
    await device.attach()
    alices = [new_id() for _ in range(3)]
    for alice in alices:
        await device.execute(INSERT_USER, (alice.bytes, "Alice", "a@example.com"))
        await device.c.sync()
    assert await device.c.last_bundle_seq_seen() == 3

    # Attaching another user while attached is refused; unsynced data blocks the detach.
    with pytest.raises(AttachBindingConflictError):
        await device.c.attach(second)
    unsynced = new_id()
    await device.execute(INSERT_USER, (unsynced.bytes, "Late", "late@example.com"))
    blocked = await device.c.detach()
    assert blocked.outcome is DetachOutcome.BLOCKED_UNSYNCED_DATA
    assert blocked.pending_row_count == 1
    assert await device.ids("users") == {*alices, unsynced}

    finished = await device.c.sync_then_detach()
    assert finished.is_success
    assert await server_ids(harness, first, "users") == {*alices, unsynced}
    assert await device.ids("users") == set()

    device.user = second
    attached = await device.c.attach(second)

    assert attached.outcome is AttachOutcome.USED_REMOTE_STATE
    assert await device.ids("users") == set(bobs)
    # No checkpoint inherited from the first user (3 > second's head 2 would break pulls).
    assert await device.c.last_bundle_seq_seen() == 2
    assert await device.dirty_count() == 0
    # The device follows the second user's scope from here on.
    dave = new_id()
    await other.execute(INSERT_USER, (dave.bytes, "Dave", "d@example.com"))
    await other.c.sync()
    report = await device.c.sync()
    assert report.remote_outcome is RemoteSyncOutcome.APPLIED_INCREMENTAL
    assert await device.ids("users") == {*bobs, dave}
    assert await device.c.last_bundle_seq_seen() == 3
    assert await server_ids(harness, first, "users") == {*alices, unsynced}


async def test_switched_user_pushes_without_source_recovery(harness: Harness) -> None:
    """CLIENT.md §12.28: the source's bundle counter must not leak from user A to user B."""
    first, second = new_user("first"), new_user("second")
    device = await harness.device("shared", user=first)
    await device.attach()
    for _ in range(2):
        await device.execute(INSERT_USER, (new_id().bytes, "Alice", "a@example.com"))
        await device.c.sync()
    assert (await device.c.detach()).outcome is DetachOutcome.DETACHED

    attached = await device.attach(second)
    assert attached.outcome is AttachOutcome.STARTED_EMPTY
    carol = new_id()
    await device.execute(INSERT_USER, (carol.bytes, "Carol", "c@example.com"))

    report = await device.c.sync()

    assert report.push_outcome is PushOutcome.COMMITTED
    assert await server_ids(harness, second, "users") == {carol}
    assert not (await device.c.source_info()).source_recovery_required
    assert await device.ids("users") == {carol}
    assert len(await server_ids(harness, first, "users")) == 2


async def test_concurrent_first_initializers_have_a_single_winner(harness: Harness) -> None:
    user = new_user()
    winner = await harness.device("winner", user=user)
    loser = await harness.device("loser", user=user)
    seeded, lost = new_id(), new_id()
    await winner.execute(INSERT_USER, (seeded.bytes, "Seed", "seed@example.com"))
    await loser.execute(INSERT_USER, (lost.bytes, "Other", "other@example.com"))

    assert (await winner.c.attach(user)).outcome is AttachOutcome.SEEDED_FROM_LOCAL
    waiting = await loser.c.attach(user)

    # The scope is initializing under the winner's lease: the loser must wait, unchanged.
    assert waiting.status is AttachStatus.RETRY_LATER
    assert waiting.outcome is None
    assert waiting.retry_after > 0
    assert await loser.ids("users") == {lost}
    assert (await loser.c.pending_sync_status()).pending_row_count == 1

    await winner.c.sync()
    converged = await loser.c.attach(user)

    # The winner's seed is authoritative; the loser's anonymous rows are replaced by it.
    assert converged.outcome is AttachOutcome.USED_REMOTE_STATE
    assert await loser.ids("users") == {seeded}
    assert await server_ids(harness, user, "users") == {seeded}
    assert (await loser.c.pending_sync_status()).pending_row_count == 0


async def test_connect_failure_leaves_anonymous_state_intact(harness: Harness) -> None:
    user = new_user()
    network = LossyTransport()
    device = await harness.device("offline", user=user, transport=network, retry=NO_RETRY)
    row = new_id()
    await device.execute(INSERT_USER, (row.bytes, "Offline", "offline@example.com"))
    network.fail_before(lambda r: r.url.path == "/sync/connect")

    with pytest.raises(RetryExhaustedError, match="injected"):
        await device.c.attach(user)

    assert await device.ids("users") == {row}
    assert (await device.c.pending_sync_status()).pending_row_count == 1
    assert not (await device.c.pending_sync_status()).blocks_detach
    # Connectivity returns: the offline rows seed the scope.
    assert (await device.c.attach(user)).outcome is AttachOutcome.SEEDED_FROM_LOCAL
    await device.c.sync()
    assert await server_ids(harness, user, "users") == {row}


async def test_transient_pull_failure_is_retried(harness: Harness) -> None:
    user = new_user()
    writer = await harness.device("writer", user=user)
    await writer.attach()
    row = new_id()
    await writer.execute(INSERT_USER, (row.bytes, "Row", "row@example.com"))
    await writer.c.sync()
    network = LossyTransport()
    reader = await harness.device("reader", user=user, transport=network)
    await reader.attach()
    newer = new_id()
    await writer.execute(INSERT_USER, (newer.bytes, "Newer", "newer@example.com"))
    await writer.c.sync()
    network.fail_before(lambda r: r.url.path == "/sync/pull")

    report = await reader.c.pull_to_stable()

    assert report.outcome is RemoteSyncOutcome.APPLIED_INCREMENTAL
    assert network.dropped == ["/sync/pull"]
    assert network.count("GET", "/sync/pull") == 2
    assert await reader.ids("users") == {row, newer}
