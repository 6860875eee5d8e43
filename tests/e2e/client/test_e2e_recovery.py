"""Pruned history and source recovery, each provoked on the real server the way it happens.

* ``history_pruned`` on pull: the retention floor passes a device's checkpoint -> snapshot;
* ``history_pruned`` on push create: a commit whose reply was lost falls below the floor;
* ``source_sequence_out_of_order``: the server's watermark for the source is behind the device
  (a server restored from an older backup);
* ``source_sequence_changed``: a cloned install of the same source commits between our create
  and our commit;
* ``source_retired``: the clone's source was retired by the other install's rotation;
* ``already_committed`` with another writer's rows: a clone pushing under its twin's source.

Each recovery must end with every local change on the server exactly once.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from oversync_sa.client.errors import RebuildRequiredError, SourceRecoveryRequiredError
from oversync_sa.client.results import (
    PushOutcome,
    RemoteSyncOutcome,
    SourceRecoveryCode,
)
from oversync_sa.client.triggers import TRANSITION_PENDING_MESSAGE
from tests.e2e.client._support import (
    INSERT_USER,
    NO_RETRY,
    SERVER_INSERT_USER,
    Device,
    Harness,
    LossyTransport,
    is_commit,
    new_id,
    new_user,
    server_ids,
)

pytestmark = pytest.mark.postgres


async def add_user(device: Device, name: str) -> uuid.UUID:
    row = new_id()
    await device.execute(INSERT_USER, (row.bytes, name, f"{name.lower()}@example.com"))
    return row


async def head(harness: Harness, user: str) -> int:
    return int(await harness.server_scalar(
        "SELECT next_bundle_seq - 1 FROM sync.user_state WHERE user_id = :u", u=user
    ))


async def source_state(harness: Harness, user: str, source: str) -> tuple[str, int, str]:
    async with harness.pg.connect() as conn:
        row = (await conn.execute(text(
            "SELECT s.state, s.max_committed_source_bundle_id, s.replaced_by_source_id"
            " FROM sync.source_state s JOIN sync.user_state u USING (user_pk)"
            " WHERE u.user_id = :u AND s.source_id = :s"
        ), {"u": user, "s": source})).one()
    return str(row[0]), int(row[1]), str(row[2])


async def set_source_watermark(harness: Harness, user: str, source: str, value: int) -> None:
    """Set the server's ``max_committed_source_bundle_id`` of ``source`` (a restored backup)."""
    await harness.server_execute(
        "UPDATE sync.source_state SET max_committed_source_bundle_id = :v"
        " WHERE source_id = :s AND user_pk = (SELECT user_pk FROM sync.user_state"
        " WHERE user_id = :u)",
        v=value, s=source, u=user,
    )


async def clone_device(harness: Harness, user: str) -> tuple[Device, Device, str]:
    """An attached ``original`` with one synced row and an attached ``clone`` copied from it.

    Returns ``(original, clone, shared)``, ``shared`` being the source id both copies carry.
    """
    original = await harness.device("original", user=user)
    await original.attach()
    await add_user(original, "Shared")
    await original.c.sync()
    shared = original.c.runtime.source_id
    clone_path = harness.tmp / "clone.db"
    await original.copy_to(clone_path)
    await original.restart()
    await original.attach()
    clone = await harness.device("clone", path=clone_path, user=user, create_tables=False)
    await clone.attach()
    return original, clone, shared


async def assert_fails_closed(device: Device, code: SourceRecoveryCode) -> None:
    """Recovery is durable: reported, blocking sync and local writes, until a rebuild."""
    info = await device.c.source_info()
    assert info.source_recovery_required
    assert info.source_recovery_reason is code
    assert info.rebuild_required
    for operation in (device.c.sync, device.c.push_pending, device.c.pull_to_stable):
        with pytest.raises(SourceRecoveryRequiredError) as caught:
            await operation()
        assert caught.value.code == code.value
    with pytest.raises(DBAPIError, match=TRANSITION_PENDING_MESSAGE):
        await device.execute(INSERT_USER, (new_id().bytes, "Blocked", "blocked@example.com"))


# --------------------------------------------------------------------------- history_pruned


async def test_pull_below_the_retention_floor_rebuilds_from_a_snapshot(harness: Harness) -> None:
    user = new_user()
    a = await harness.device("a", user=user)
    b = await harness.device("b", user=user)
    await a.attach()
    await b.attach()
    rows = [await add_user(a, "First")]
    await a.c.sync()
    await b.c.sync()
    assert await b.c.last_bundle_seq_seen() == 1
    for i in range(3):
        rows.append(await add_user(a, f"Later{i}"))
        await a.c.sync()
    await a.execute("DELETE FROM users WHERE id = ?", (rows[0].bytes,))
    await a.c.sync()
    assert await head(harness, user) == 5
    await harness.set_retention_floor(user, 4)
    # B also has an unsynced local write: the sync pushes it before the pruned pull.
    mine = await add_user(b, "Mine")

    report = await b.c.sync()

    assert report.push_outcome is PushOutcome.COMMITTED
    assert report.remote_outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    assert report.restore is not None
    assert report.restore.bundle_seq == 6
    assert await b.ids("users") == {*rows[1:], mine}
    assert await b.c.last_bundle_seq_seen() == 6
    assert not (await b.c.source_info()).rebuild_required
    await a.c.sync()
    assert await a.ids("users") == await b.ids("users") == await server_ids(harness, user, "users")
    # The rebuilt device is an ordinary peer again.
    after = await add_user(b, "After")
    await b.c.sync()
    await a.c.sync()
    assert after in await a.ids("users")


async def test_pull_from_checkpoint_zero_over_pruned_history_rebuilds(harness: Harness) -> None:
    # The device that initialized the scope empty still has checkpoint 0. The server answers a
    # pull after 0 from above its floor without history_pruned (SERVER.md §6.2), so bundle 1
    # was silently skipped and its row never reached this device.
    user = new_user()
    first = await harness.device("first", user=user)
    other = await harness.device("other", user=user)
    await first.attach()
    await other.attach()
    early = await add_user(other, "Early")
    await other.c.sync()
    late = await add_user(other, "Late")
    await other.c.sync()
    assert await head(harness, user) == 2
    await harness.set_retention_floor(user, 1)
    assert await first.c.last_bundle_seq_seen() == 0

    report = await first.c.pull_to_stable()

    assert report.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    assert await first.ids("users") == {early, late} == await server_ids(harness, user, "users")
    assert await first.c.last_bundle_seq_seen() == 2


async def test_explicit_rebuild_keeps_source_and_replaces_local_state(harness: Harness) -> None:
    user = new_user()
    device = await harness.device("a", user=user)
    await device.attach()
    kept = await add_user(device, "Kept")
    await device.c.sync()
    source = device.c.runtime.source_id
    # Local tables drift from the server behind the client's back (e.g. a buggy migration).
    assert device.engine is not None
    async with device.engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE _sync_apply_state SET apply_mode = 1")
        await conn.exec_driver_sql("DELETE FROM users")
        await conn.exec_driver_sql("UPDATE _sync_apply_state SET apply_mode = 0")
    assert await device.ids("users") == set()

    report = await device.c.rebuild()

    assert report.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    assert await device.ids("users") == {kept}
    assert device.c.runtime.source_id == source
    assert await device.next_source_bundle_id() == 2


async def test_lost_commit_reply_below_the_floor_recovers_with_a_new_source(
    harness: Harness,
) -> None:
    user = new_user()
    peer = await harness.device("peer", user=user)
    await peer.attach()
    network = LossyTransport()
    device = await harness.device("device", user=user, transport=network, retry=NO_RETRY)
    await device.attach()
    mine = await add_user(device, "Mine")
    network.drop_reply_after(is_commit)

    with pytest.raises(Exception, match="reply lost"):
        await device.c.sync()

    # The server committed it (bundle 1), the device still has a prepared outbox.
    assert await server_ids(harness, user, "users") == {mine}
    assert await device.outbox_count() == 1
    for name in ("P1", "P2"):
        await add_user(peer, name)
        await peer.c.sync()
    await harness.set_retention_floor(user, 2)
    old_source = device.c.runtime.source_id

    with pytest.raises(SourceRecoveryRequiredError) as caught:
        await device.c.sync()

    assert caught.value.code == "history_pruned"
    await assert_fails_closed(device, SourceRecoveryCode.HISTORY_PRUNED)
    # Durable across a restart.
    await device.restart(transport=LossyTransport())
    await device.attach()
    await assert_fails_closed(device, SourceRecoveryCode.HISTORY_PRUNED)

    rebuilt = await device.c.rebuild()

    assert rebuilt.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    new_source = device.c.runtime.source_id
    assert new_source != old_source
    assert (await source_state(harness, user, old_source))[0] == "retired"
    assert not (await device.c.source_info()).source_recovery_required
    await device.c.sync()
    await peer.c.sync()
    assert await server_ids(harness, user, "users") == await device.ids("users")
    assert await peer.ids("users") == await device.ids("users")
    assert len(await device.ids("users")) == 3
    assert await device.dirty_count() == await device.outbox_count() == 0
    # New writes go out under the new source.
    later = await add_user(device, "Later")
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert later in await server_ids(harness, user, "users")
    assert (await source_state(harness, user, new_source))[0] == "active"


# --------------------------------------------------------------------------- source sequencing


async def test_source_sequence_out_of_order_recovers_with_a_new_source(harness: Harness) -> None:
    user = new_user()
    device = await harness.device("device", user=user)
    await device.attach()
    first = await add_user(device, "First")
    await device.c.sync()
    second = await add_user(device, "Second")
    await device.c.sync()
    old_source = device.c.runtime.source_id
    # The server is restored from a backup taken before the device's second bundle: its
    # watermark for the source is one behind, so the device's next id skips ahead of it.
    await set_source_watermark(harness, user, old_source, 1)
    third = await add_user(device, "Third")

    with pytest.raises(SourceRecoveryRequiredError) as caught:
        await device.c.sync()

    assert caught.value.code == "source_sequence_out_of_order"
    await assert_fails_closed(device, SourceRecoveryCode.SOURCE_SEQUENCE_OUT_OF_ORDER)
    await device.c.rebuild()
    assert device.c.runtime.source_id != old_source
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert await server_ids(harness, user, "users") == {first, second, third}
    assert await device.ids("users") == {first, second, third}


async def test_source_sequence_changed_between_create_and_commit(harness: Harness) -> None:
    user = new_user()
    device = await harness.device("device", user=user)
    await device.attach()
    await add_user(device, "First")
    await device.c.sync()
    source = device.c.runtime.source_id
    mine = await add_user(device, "Mine")
    server_row = new_id()

    async def same_source_commits_first(_conn: object) -> None:
        # Writer ids share the scope's source namespace: a server writer using this device's
        # source id takes source bundle 2 after our session was created for it.
        await harness.server_write(user, [(SERVER_INSERT_USER, {"id": server_row})], writer=source)

    device.c.runtime.hooks.before_push_commit = same_source_commits_first
    with pytest.raises(SourceRecoveryRequiredError) as caught:
        await device.c.sync()

    assert caught.value.code == "source_sequence_changed"
    await assert_fails_closed(device, SourceRecoveryCode.SOURCE_SEQUENCE_CHANGED)
    await device.c.rebuild()
    assert device.c.runtime.source_id != source
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    users = await server_ids(harness, user, "users")
    assert {mine, server_row} <= users
    assert len(users) == 3
    assert await device.ids("users") == users
    assert await device.dirty_count() == await device.outbox_count() == 0


async def retire_shared_source(
    harness: Harness, user: str
) -> tuple[Device, Device, set[uuid.UUID]]:
    """Two installs of one source; the original rotates away from it (recovery + rebuild).

    Returns ``(original, clone, rows)`` with the original's recovered push committed and the
    clone holding one unsynced row that its next sync must carry.
    """
    original, clone, shared_source = await clone_device(harness, user)
    assert clone.c.runtime.source_id == shared_source

    # The original goes through source recovery and rotates: the shared source is retired.
    await set_source_watermark(harness, user, shared_source, 0)
    from_original = await add_user(original, "FromOriginal")
    with pytest.raises(SourceRecoveryRequiredError):
        await original.c.sync()
    await original.c.rebuild()
    rotated = original.c.runtime.source_id
    assert (await original.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert (await source_state(harness, user, shared_source))[::2] == ("retired", rotated)
    from_clone = await add_user(clone, "FromClone")
    return original, clone, {from_original, from_clone}


async def test_source_retired_by_another_install_fails_closed_then_rotates(
    harness: Harness,
) -> None:
    user = new_user()
    original, clone, _ = await retire_shared_source(harness, user)
    retired_source = clone.c.runtime.source_id

    with pytest.raises(SourceRecoveryRequiredError) as caught:
        await clone.c.sync()

    assert caught.value.code == "source_retired"
    await assert_fails_closed(clone, SourceRecoveryCode.SOURCE_RETIRED)
    await clone.restart()
    await clone.attach()
    await assert_fails_closed(clone, SourceRecoveryCode.SOURCE_RETIRED)
    rebuilt = await clone.c.rebuild()
    assert rebuilt.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    # The server named the replacement; the clone rotates to exactly that source.
    assert clone.c.runtime.source_id == original.c.runtime.source_id != retired_source
    assert not (await clone.c.source_info()).source_recovery_required
    assert await clone.ids("users") >= await server_ids(harness, user, "users")


async def test_source_retired_clone_converges_after_rotation(harness: Harness) -> None:
    user = new_user()
    original, clone, rows = await retire_shared_source(harness, user)
    retired = clone.c.runtime.source_id
    with pytest.raises(SourceRecoveryRequiredError):
        await clone.c.sync()
    await clone.c.rebuild()
    twin_source = original.c.runtime.source_id
    assert clone.c.runtime.source_id == twin_source
    # Written after the rotation, before the push that discovers the twin: must survive too.
    later = await add_user(clone, "CloneLater")

    report = await clone.c.push_pending()
    assert await clone.dirty_count() == 1
    await clone.c.sync()
    await original.c.sync()

    # (twin_source, 1) was the twin's bundle: the clone moved to a source of its own instead of
    # retiring the twin's, so the twin keeps pushing without any recovery of its own.
    assert report.outcome is PushOutcome.COMMITTED
    fresh = clone.c.runtime.source_id
    assert fresh not in {retired, twin_source}
    assert original.c.runtime.source_id == twin_source
    assert (await source_state(harness, user, twin_source))[0] == "active"
    # Bundle 1: the moved outbox; bundle 2: the row written before the push.
    assert (await source_state(harness, user, fresh))[:2] == ("active", 2)
    expected = await server_ids(harness, user, "users")
    assert rows | {later} <= expected
    assert len(expected) == 4
    assert await clone.ids("users") == await original.ids("users") == expected
    assert await clone.dirty_count() == await clone.outbox_count() == 0
    # Both installs go on as ordinary, distinct writers.
    from_twin = await add_user(original, "TwinAfter")
    from_clone = await add_user(clone, "CloneAfter")
    for device in (original, clone, original):
        assert (await device.c.sync()).push_outcome in (PushOutcome.COMMITTED,
                                                         PushOutcome.NO_CHANGE)
    assert {from_twin, from_clone} <= await server_ids(harness, user, "users")
    assert await clone.ids("users") == await original.ids("users")


async def test_cloned_database_moves_to_a_fresh_source_on_a_foreign_bundle(
    harness: Harness,
) -> None:
    """Two copies of one database, no retirement: the second push of (S, 2) finds the first's.

    ``already_committed`` with rows that are not ours proves the clone; the loser re-addresses
    its unchanged outbox to a fresh source instead of failing closed forever.
    """
    user = new_user()
    original, clone, shared = await clone_device(harness, user)
    assert clone.c.runtime.source_id == shared
    from_original = await add_user(original, "FromOriginal")
    assert (await original.c.sync()).push_outcome is PushOutcome.COMMITTED
    from_clone = await add_user(clone, "FromClone")

    report = await clone.c.sync()

    assert report.push_outcome is PushOutcome.COMMITTED
    fresh = clone.c.runtime.source_id
    assert fresh != shared
    assert original.c.runtime.source_id == shared
    assert (await source_state(harness, user, shared))[:2] == ("active", 2)
    assert (await source_state(harness, user, fresh))[:2] == ("active", 1)
    assert not (await clone.c.source_info()).source_recovery_required
    await original.c.sync()
    expected = await server_ids(harness, user, "users")
    assert {from_original, from_clone} <= expected
    assert len(expected) == 3
    assert await clone.ids("users") == await original.ids("users") == expected
    # The move is durable: after a restart the clone still pushes as its own source.
    await clone.restart()
    await clone.attach()
    assert clone.c.runtime.source_id == fresh
    again = await add_user(clone, "Again")
    assert (await clone.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert (await source_state(harness, user, fresh))[:2] == ("active", 2)
    assert again in await server_ids(harness, user, "users")


async def test_rebuild_required_blocks_sync_until_rebuild(harness: Harness) -> None:
    user = new_user()
    device = await harness.device("device", user=user)
    await device.attach()
    row = await add_user(device, "Row")
    await device.c.sync()
    # A rebuild that failed midway (here: the server is unreachable for the snapshot) leaves
    # rebuild_required set; nothing may sync on top of the half-known state.
    network = LossyTransport()
    await device.restart(transport=network, retry=NO_RETRY)
    await device.attach()
    network.fail_before(lambda r: r.url.path == "/sync/snapshot-sessions")
    with pytest.raises(Exception, match="injected"):
        await device.c.rebuild()
    assert (await device.c.source_info()).rebuild_required
    with pytest.raises(RebuildRequiredError):
        await device.c.sync()

    await device.c.rebuild()

    assert not (await device.c.source_info()).rebuild_required
    assert await device.ids("users") == {row}
    assert (await device.c.sync()).remote_outcome is RemoteSyncOutcome.ALREADY_AT_TARGET


async def test_clone_whose_own_rotation_diverges_moves_to_its_reserved_source(
    harness: Harness,
) -> None:
    """Both copies of one source enter recovery; the first rotation retires the shared source.

    The second copy's rotation names its own reserved id, which the server refuses for a
    retired source (only the recorded replacement is allowed); it must not retry that forever
    but continue as its reserved id - unknown to the server, so its first push activates it.
    """
    user = new_user()
    original, clone, shared = await clone_device(harness, user)
    await set_source_watermark(harness, user, shared, 0)
    rows = {await add_user(original, "FromOriginal"), await add_user(clone, "FromClone")}
    for device in (original, clone):
        with pytest.raises(SourceRecoveryRequiredError) as caught:
            await device.c.sync()
        assert caught.value.code == "source_sequence_out_of_order"
    await original.c.rebuild()
    assert (await original.c.sync()).push_outcome is PushOutcome.COMMITTED
    rotated = original.c.runtime.source_id
    assert (await source_state(harness, user, shared))[::2] == ("retired", rotated)

    rebuilt = await clone.c.rebuild()

    assert rebuilt.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    own = clone.c.runtime.source_id
    assert own not in {shared, rotated}
    assert not (await clone.c.source_info()).source_recovery_required
    assert (await clone.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert (await source_state(harness, user, own))[:2] == ("active", 1)
    # The twin's source was left alone.
    assert (await source_state(harness, user, rotated))[0] == "active"
    await original.c.sync()
    expected = await server_ids(harness, user, "users")
    assert rows <= expected
    assert len(expected) == 3
    assert await clone.ids("users") == await original.ids("users") == expected
