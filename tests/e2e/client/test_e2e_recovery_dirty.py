"""Source recovery with offline edits pending: the rotation carries them (CLIENT.md §8.3, §12.42).

A push gets stuck with its outbox frozen as ``prepared``; the user keeps editing, so new rows
land in ``_sync_dirty_rows``; then the server rejects the source and the client enters source
recovery. Go's rotated ``Rebuild`` refuses dirty rows while push, pull and every application
write are refused too - a dead end. Here the rotated rebuild re-applies the outbox and the dirty
rows over the snapshot and keeps both queued, so the next sync uploads everything once.

Each recovery reason is provoked on the real server the way it happens:

* ``history_pruned``: the stuck push's commit reply was lost, then the retention floor passed
  that bundle;
* ``source_sequence_out_of_order``: the stuck push never committed, then the server's
  watermark for the source went back (a server restored from an older backup);
* ``source_sequence_changed``: another writer commits under our source between our create and
  our commit, while the user is editing;
* ``source_retired``: a copy of the database file rotated away from the shared source.

Also: a carried edit keeps its captured base (a concurrent change still reaches the resolver);
the keep-source rebuild still refuses dirty rows; the pruned-replay snapshot (§8.5, where Go
wipes the dirty rows) carries them the same way, and drops them, logged, when they break a
foreign key next to the server's rows instead of failing forever.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from oversync_sa.client.conflicts import AcceptServer, ConflictContext, MergeResult
from oversync_sa.client.errors import DirtyStateRejectedError, SourceRecoveryRequiredError
from oversync_sa.client.results import PushOutcome, RemoteSyncOutcome, SourceRecoveryCode
from tests.e2e.client._support import (
    INSERT_POST,
    NO_RETRY,
    SERVER_INSERT_USER,
    Device,
    Harness,
    InjectedCrash,
    LossyTransport,
    crash_hook,
    is_commit,
    is_push_create,
    new_user,
)
from tests.e2e.client.test_e2e_recovery import (
    add_user,
    assert_fails_closed,
    head,
    set_source_watermark,
)

pytestmark = pytest.mark.postgres

UPDATE_NAME = "UPDATE users SET name = ? WHERE id = ?"
DELETE_USER = "DELETE FROM users WHERE id = ?"


@dataclass
class Scene:
    """A device with synced rows ``keep``/``gone`` and a stuck outbox holding ``mine``."""

    user: str
    peer: Device
    device: Device
    network: LossyTransport
    keep: uuid.UUID
    gone: uuid.UUID
    mine: uuid.UUID
    #: The users every copy must end with: ``{id: name}``.
    expected: dict[uuid.UUID, str]


async def synced_scene(harness: Harness, resolver: Any = None) -> Scene:
    user = new_user()
    peer = await harness.device("peer", user=user)
    await peer.attach()
    network = LossyTransport()
    device = await harness.device(
        "device", user=user, transport=network, retry=NO_RETRY, resolver=resolver
    )
    await device.attach()
    keep = await add_user(device, "Keep")
    gone = await add_user(device, "Gone")
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    await peer.c.sync()
    return Scene(user, peer, device, network, keep, gone, uuid.UUID(int=0),
                 {keep: "Keep", gone: "Gone"})


async def stick_outbox(scene: Scene, *, lose_commit_reply: bool) -> None:
    """Freeze ``mine`` into an outbox whose push fails mid-way (it stays ``prepared``)."""
    scene.mine = await add_user(scene.device, "Mine")
    scene.expected[scene.mine] = "Mine"
    if lose_commit_reply:
        scene.network.drop_reply_after(is_commit)
    else:
        scene.network.fail_before(is_commit)
    with pytest.raises(Exception, match="injected"):
        await scene.device.c.sync()
    assert await scene.device.outbox_count() == 1
    assert await scene.device.dirty_count() == 0


async def crash_before_replay(scene: Scene) -> None:
    """Push ``mine`` and crash after the commit, before the replay (its outbox stays)."""
    scene.mine = await add_user(scene.device, "Mine")
    scene.expected[scene.mine] = "Mine"
    scene.device.c.runtime.hooks.before_push_replay = crash_hook("before replay")
    with pytest.raises(InjectedCrash):
        await scene.device.c.sync()


async def edit_offline(scene: Scene) -> uuid.UUID:
    """The user goes on editing: an insert, an update and a delete of synced rows."""
    device = scene.device
    new = await add_user(device, "New")
    await device.execute(UPDATE_NAME, ("Keep edited", scene.keep.bytes))
    await device.execute(DELETE_USER, (scene.gone.bytes,))
    scene.expected[new] = "New"
    scene.expected[scene.keep] = "Keep edited"
    del scene.expected[scene.gone]
    assert await device.dirty_count() == 3
    return new


async def dirty_rows(device: Device) -> dict[uuid.UUID, tuple[str, int]]:
    found = await device.rows("SELECT key_json, op, base_row_version FROM _sync_dirty_rows")
    return {_key(str(k)): (str(op), int(base)) for k, op, base in found}


def _key(key_json: str) -> uuid.UUID:
    return uuid.UUID(hex=json.loads(key_json)["id"])


async def names(device: Device) -> dict[uuid.UUID, str]:
    return {k: str(v[0]) for k, v in (await device.table("users", "name")).items()}


async def server_names(harness: Harness, user: str) -> dict[uuid.UUID, str]:
    return {r["id"]: r["name"] for r in await harness.server_rows(user, "users", "id, name")}


async def recover_and_converge(
    harness: Harness,
    scene: Scene,
    code: SourceRecoveryCode,
    *,
    outbox_left: int,
    rebased: dict[uuid.UUID, tuple[str, int]] | None = None,
) -> None:
    """Recovery is entered with the edits pending; the rotation keeps them; everyone converges.

    ``outbox_left``: frozen rows still to push after the rotation (rows the snapshot already
    holds leave the outbox); ``rebased``: dirty rows whose base moves to the snapshot's version.
    """
    device = scene.device
    old_source = device.c.runtime.source_id
    await assert_fails_closed(device, code)
    before = await dirty_rows(device)

    rebuilt = await device.c.rebuild()

    assert rebuilt.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    assert device.c.runtime.source_id != old_source
    assert not (await device.c.source_info()).source_recovery_required
    # The local state is the snapshot with the outbox and then the edits on top, and both
    # queues survive: the dirty rows keep the ops and bases they were captured with.
    assert await names(device) == scene.expected
    assert await dirty_rows(device) == {**before, **(rebased or {})}
    assert await device.outbox_count() == outbox_left

    # One sync uploads the outbox, then the edits waiting behind it, then pulls.
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED

    assert await device.dirty_count() == await device.outbox_count() == 0
    await scene.peer.c.sync()
    assert await server_names(harness, scene.user) == scene.expected
    assert await names(device) == await names(scene.peer) == scene.expected
    duplicates = await harness.server_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM sync.bundle_log b JOIN sync.user_state u"
        " USING (user_pk) WHERE u.user_id = :u GROUP BY b.source_id, b.source_bundle_id"
        " HAVING COUNT(*) > 1) d", u=scene.user,
    )
    assert duplicates == 0


async def peer_writes(scene: Scene, *names_: str) -> None:
    for name in names_:
        scene.expected[await add_user(scene.peer, name)] = name
        assert (await scene.peer.c.sync()).push_outcome is PushOutcome.COMMITTED


# --------------------------------------------------------------------------- the reasons


async def test_history_pruned_with_pending_edits_rotates_and_uploads_them(
    harness: Harness,
) -> None:
    scene = await synced_scene(harness)
    await stick_outbox(scene, lose_commit_reply=True)
    new = await edit_offline(scene)
    await peer_writes(scene, "P1", "P2")
    await harness.set_retention_floor(scene.user, await head(harness, scene.user))

    with pytest.raises(SourceRecoveryRequiredError) as caught:
        await scene.device.c.sync()

    assert caught.value.code == "history_pruned"
    # Bases as captured: the synced rows' bundle 1, nothing for the new row.
    assert await dirty_rows(scene.device) == {
        new: ("INSERT", 0), scene.keep: ("UPDATE", 1), scene.gone: ("DELETE", 1),
    }
    # The lost-reply bundle is in the snapshot: nothing of the outbox is left to push.
    await recover_and_converge(harness, scene, SourceRecoveryCode.HISTORY_PRUNED, outbox_left=0)


async def test_sequence_out_of_order_with_pending_edits_rotates_and_uploads_them(
    harness: Harness,
) -> None:
    scene = await synced_scene(harness)
    await stick_outbox(scene, lose_commit_reply=False)
    await edit_offline(scene)
    await peer_writes(scene, "P1")
    # The server is restored from a backup older than the device's first bundle.
    await set_source_watermark(harness, scene.user, scene.device.c.runtime.source_id, 0)

    with pytest.raises(SourceRecoveryRequiredError) as caught:
        await scene.device.c.sync()

    assert caught.value.code == "source_sequence_out_of_order"
    await recover_and_converge(
        harness, scene, SourceRecoveryCode.SOURCE_SEQUENCE_OUT_OF_ORDER, outbox_left=1
    )


async def test_sequence_changed_while_editing_rotates_and_uploads_the_edits(
    harness: Harness,
) -> None:
    scene = await synced_scene(harness)
    device = scene.device
    source = device.c.runtime.source_id
    scene.mine = await add_user(device, "Mine")
    scene.expected[scene.mine] = "Mine"
    server_row = uuid.uuid4()
    scene.expected[server_row] = "Server"

    async def edits_and_a_same_source_commit(_conn: object) -> None:
        await edit_offline(scene)
        await harness.server_write(
            scene.user, [(SERVER_INSERT_USER, {"id": server_row})], writer=source
        )

    device.c.runtime.hooks.before_push_commit = edits_and_a_same_source_commit
    with pytest.raises(SourceRecoveryRequiredError) as caught:
        await device.c.sync()

    assert caught.value.code == "source_sequence_changed"
    await recover_and_converge(
        harness, scene, SourceRecoveryCode.SOURCE_SEQUENCE_CHANGED, outbox_left=1
    )


# --------------------------------------------------------------------------- bases


class Recorder:
    """Server wins, remembering every conflict it was asked about."""

    def __init__(self) -> None:
        self.seen: list[ConflictContext] = []

    def resolve(self, context: ConflictContext) -> MergeResult:
        self.seen.append(context)
        return AcceptServer()


async def test_carried_edit_still_conflicts_with_a_concurrent_change(harness: Harness) -> None:
    """The carried UPDATE keeps its captured base: another device's newer write to the same row
    reaches the resolver instead of being overwritten by a push re-based on the snapshot."""
    resolver = Recorder()
    scene = await synced_scene(harness, resolver=resolver)
    await stick_outbox(scene, lose_commit_reply=False)
    await edit_offline(scene)
    await scene.peer.execute(UPDATE_NAME, ("Keep by peer", scene.keep.bytes))
    assert (await scene.peer.c.sync()).push_outcome is PushOutcome.COMMITTED
    await set_source_watermark(harness, scene.user, scene.device.c.runtime.source_id, 0)
    with pytest.raises(SourceRecoveryRequiredError):
        await scene.device.c.sync()
    await scene.device.c.rebuild()
    # The edit is what the user sees until the push settles the conflict.
    assert (await names(scene.device))[scene.keep] == "Keep edited"

    assert (await scene.device.c.sync()).push_outcome is PushOutcome.COMMITTED

    conflicts = [c for c in resolver.seen if c.key == {"id": str(scene.keep)}]
    assert len(conflicts) == 1
    assert conflicts[0].base_row_version == 1
    assert conflicts[0].local_payload is not None
    assert conflicts[0].local_payload["name"] == "Keep edited"
    assert conflicts[0].server_row is not None
    assert conflicts[0].server_row["name"] == "Keep by peer"
    scene.expected[scene.keep] = "Keep by peer"
    await scene.peer.c.sync()
    assert await server_names(harness, scene.user) == scene.expected
    assert await names(scene.device) == await names(scene.peer) == scene.expected
    assert await scene.device.dirty_count() == await scene.device.outbox_count() == 0


async def test_edit_of_the_stuck_row_itself_survives_history_pruned(harness: Harness) -> None:
    """The lost-reply bundle is in the snapshot, so re-pushing the outbox meets our own write."""
    scene = await synced_scene(harness)
    await stick_outbox(scene, lose_commit_reply=True)
    await scene.device.execute(UPDATE_NAME, ("Mine edited", scene.mine.bytes))
    scene.expected[scene.mine] = "Mine edited"
    await peer_writes(scene, "P1")
    await harness.set_retention_floor(scene.user, await head(harness, scene.user))
    with pytest.raises(SourceRecoveryRequiredError):
        await scene.device.c.sync()
    assert await dirty_rows(scene.device) == {scene.mine: ("INSERT", 0)}
    mine_version = await head(harness, scene.user) - 1

    # Re-pushed, the stuck INSERT would conflict with our own committed row, and server-wins
    # would then discard the edit too. The snapshot shows the insert is done, so the outbox
    # empties and the edit is based on the committed row.
    await recover_and_converge(
        harness, scene, SourceRecoveryCode.HISTORY_PRUNED, outbox_left=0,
        rebased={scene.mine: ("INSERT", mine_version)},
    )


# --------------------------------------------------------------------------- replay pruned


async def test_edits_survive_a_committed_bundle_pruned_before_replay(harness: Harness) -> None:
    """§8.5 (keep source, outbox dropped): Go wipes dirty rows in that snapshot; here they stay."""
    scene = await synced_scene(harness)
    device = scene.device
    await crash_before_replay(scene)
    new = await edit_offline(scene)
    await device.execute(UPDATE_NAME, ("Mine edited", scene.mine.bytes))
    scene.expected[scene.mine] = "Mine edited"
    await peer_writes(scene, "P1")
    await harness.set_retention_floor(scene.user, await head(harness, scene.user))
    source = device.c.runtime.source_id
    mine_version = await head(harness, scene.user) - 1

    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED

    assert device.c.runtime.source_id == source
    assert await names(device) == scene.expected
    assert await device.outbox_count() == 0
    # The edit of the committed row now sits on the committed version; the others keep theirs.
    assert await dirty_rows(device) == {
        new: ("INSERT", 0), scene.keep: ("UPDATE", 1), scene.gone: ("DELETE", 1),
        scene.mine: ("INSERT", mine_version),
    }
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    await scene.peer.c.sync()
    assert await device.dirty_count() == await device.outbox_count() == 0
    assert await server_names(harness, scene.user) == scene.expected
    assert await names(device) == await names(scene.peer) == scene.expected


async def test_edits_that_break_a_foreign_key_do_not_block_the_pruned_replay(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A post written offline under a user another device deleted cannot stand next to the
    snapshot; the rebuild drops that edit (logged) rather than failing forever, and keeps the
    other pending edits."""
    scene = await synced_scene(harness)
    device = scene.device
    await crash_before_replay(scene)
    post = uuid.uuid4()
    await device.execute(INSERT_POST, (post.bytes, "T", "C", scene.gone.bytes))
    kept = await add_user(device, "Kept")
    await scene.peer.c.sync()
    await scene.peer.execute(DELETE_USER, (scene.gone.bytes,))
    assert (await scene.peer.c.sync()).push_outcome is PushOutcome.COMMITTED
    del scene.expected[scene.gone]
    await harness.set_retention_floor(scene.user, await head(harness, scene.user))

    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED

    assert "discarded pending INSERT of posts" in caplog.text
    assert "snapshot applied without 1 pending edits" in caplog.text
    assert not (await device.c.source_info()).rebuild_required
    assert await device.outbox_count() == 0
    assert await device.dirty_count() == 1  # "Kept", carried over the snapshot
    assert await device.ids("posts") == set()
    scene.expected[kept] = "Kept"
    assert await names(device) == scene.expected
    # Not wedged: the device syncs and writes on.
    later = await add_user(device, "Later")
    scene.expected[later] = "Later"
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    await scene.peer.c.sync()
    assert await server_names(harness, scene.user) == scene.expected
    assert await names(scene.peer) == scene.expected


# --------------------------------------------------------------------------- keep source


async def test_keep_source_rebuild_still_refuses_dirty_rows(harness: Harness) -> None:
    scene = await synced_scene(harness)
    await scene.device.execute(UPDATE_NAME, ("Unsent", scene.keep.bytes))
    source = scene.device.c.runtime.source_id
    requests = len(scene.network.requests)

    with pytest.raises(DirtyStateRejectedError):
        await scene.device.c.rebuild()

    # Refused before any state change or request: the edit is still there and still queued.
    assert len(scene.network.requests) == requests
    assert scene.device.c.runtime.source_id == source
    assert not (await scene.device.c.source_info()).rebuild_required
    assert (await names(scene.device))[scene.keep] == "Unsent"
    assert await dirty_rows(scene.device) == {scene.keep: ("UPDATE", 1)}


# --------------------------------------------------------------------------- source retired


async def test_source_retired_clone_with_pending_edits_rotates_and_uploads_them(
    harness: Harness,
) -> None:
    """Two installs of one database file; the other one's rotation retires the shared source
    while this one has a stuck outbox and edits behind it."""
    user = new_user()
    original = await harness.device("original", user=user)
    await original.attach()
    shared_row = await add_user(original, "Shared")
    assert (await original.c.sync()).push_outcome is PushOutcome.COMMITTED
    shared = original.c.runtime.source_id
    clone_path = harness.tmp / "clone.db"
    await original.copy_to(clone_path)
    await original.restart()
    await original.attach()
    network = LossyTransport()
    clone = await harness.device("clone", path=clone_path, user=user, create_tables=False,
                                 transport=network, retry=NO_RETRY)
    await clone.attach()
    expected = {shared_row: "Shared"}

    stuck = await add_user(clone, "Stuck")
    network.fail_before(is_push_create)
    with pytest.raises(Exception, match="injected"):
        await clone.c.sync()
    assert await clone.outbox_count() == 1
    new = await add_user(clone, "New")
    await clone.execute(UPDATE_NAME, ("Shared edited", shared_row.bytes))
    expected |= {stuck: "Stuck", new: "New", shared_row: "Shared edited"}
    # The original goes through recovery and rotates away from the shared source.
    await set_source_watermark(harness, user, shared, 0)
    expected[await add_user(original, "FromOriginal")] = "FromOriginal"
    with pytest.raises(SourceRecoveryRequiredError):
        await original.c.sync()
    await original.c.rebuild()
    assert (await original.c.sync()).push_outcome is PushOutcome.COMMITTED

    with pytest.raises(SourceRecoveryRequiredError) as caught:
        await clone.c.sync()

    assert caught.value.code == "source_retired"
    await assert_fails_closed(clone, SourceRecoveryCode.SOURCE_RETIRED)
    assert await clone.dirty_count() == 2
    await clone.c.rebuild()
    assert await names(clone) == expected
    assert await clone.dirty_count() == 2
    assert await clone.outbox_count() == 1
    # The replacement the server named is the twin's live source: the push finds its bundle 1
    # and moves to a fresh source of its own (test_e2e_recovery), the edits still behind it.
    assert (await clone.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert (await clone.c.pending_sync_status()).has_pending_sync_data is False
    await original.c.sync()
    assert await server_names(harness, user) == expected
    assert await names(clone) == await names(original) == expected


async def test_a_carried_parent_delete_under_a_new_server_child_is_dropped_alone(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The device deleted a user while another device wrote a post under it: next to the
    snapshot the deletion would leave that post without its author (posts.author_id has no
    cascade, the server would refuse the delete too), so that one edit is dropped and the
    user comes back; the device's other pending edit is kept."""
    scene = await synced_scene(harness)
    device = scene.device
    await crash_before_replay(scene)
    await device.execute(DELETE_USER, (scene.gone.bytes,))
    kept = await add_user(device, "Kept")
    post = uuid.uuid4()
    await scene.peer.c.sync()
    await scene.peer.execute(INSERT_POST, (post.bytes, "T", "C", scene.gone.bytes))
    assert (await scene.peer.c.sync()).push_outcome is PushOutcome.COMMITTED
    await harness.set_retention_floor(scene.user, await head(harness, scene.user))

    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED

    assert "discarded pending DELETE of users" in caplog.text
    assert "snapshot applied without 1 pending edits" in caplog.text
    assert await device.ids("posts") == {post}
    scene.expected[kept] = "Kept"
    assert await names(device) == scene.expected  # "Gone" is back, "Kept" is still there
    assert (await device.c.sync()).push_outcome is PushOutcome.COMMITTED
    await scene.peer.c.sync()
    assert await server_names(harness, scene.user) == scene.expected
    assert await names(scene.peer) == scene.expected
