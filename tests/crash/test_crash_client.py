"""A client killed by SIGKILL at every durable boundary loses nothing and duplicates nothing.

Each test runs a device as a child process with ``OVERSYNC_CRASH_POINT`` armed, requires it to
die by SIGKILL (so the point was really reached), checks what the crash left on disk and on the
server, then restarts the device on the same SQLite file without the variable and lets it
continue. At the end the server holds every written row exactly once, in whole bundles, and
every device of the user mirrors the server (see :func:`_support.assert_converged`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oversync_sa.errors import PushSessionInvalidError
from tests.crash._support import (
    BATCH,
    ROWS,
    Expected,
    assert_converged,
    assert_ok,
    bundles,
    local_state,
    push_sessions,
    run_device,
    run_killed,
    write_and_push,
)
from tests.e2e.client._support import Device, Harness, new_id, new_user

pytestmark = pytest.mark.postgres


async def write_one_user(device: Device, name: str) -> None:
    """One local user row, written while the device is still anonymous."""
    await device.execute(
        "INSERT INTO users (id, name, email) VALUES (?, ?, ?)",
        (new_id().bytes, name, f"{name}@example.com"),
    )


async def _writer(harness: Harness, user: str, *batches: tuple[str, int]) -> Device:
    """An attached in-process device that pushed one bundle per batch."""
    device = await harness.device("writer", user=user)
    await device.attach()
    for prefix, count in batches:
        await write_and_push(device, prefix, count)
    return device


# --------------------------------------------------------------------------- push


#: point -> at death: (outbox rows, outbox state, staged committed rows, bundles on the server,
#: rows received by the server's open push session or None without one).
PUSH_POINTS = {
    "client.outbox.freeze": (0, "none", 0, 0, None),
    "client.push.chunk_uploaded@2": (ROWS, "prepared", 0, 0, 4),
    "client.push.commit_replied": (ROWS, "prepared", 0, 1, None),
    "client.push.before_replay": (ROWS, "committed_remote", ROWS, 1, None),
    "client.replay.applied": (ROWS, "committed_remote", ROWS, 1, None),
}


#: Seed pushes (carrying an ``initialize_local`` lease) where the lease changes what a restart
#: meets: a replaced staging session re-verifies the lease, and a lost seed commit reply used to
#: wedge the device (``push_session_invalid`` forever, see ``push._create_push_session``).
SEED_POINTS = ("client.push.chunk_uploaded@2", "client.push.commit_replied")
PUSH_CASES = [pytest.param(p, False, id=f"{p}-attached") for p in PUSH_POINTS] + [
    pytest.param(p, True, id=f"{p}-seed") for p in SEED_POINTS
]


@pytest.mark.parametrize(("point", "seed"), PUSH_CASES)
async def test_push_crash_resumes_outbox(
    harness: Harness, tmp_path: Path, point: str, seed: bool
) -> None:
    """Killed anywhere in a push (freeze, upload, commit, replay): the restarted device pushes
    the same bundle once more at most, and the server keeps exactly one copy."""
    user, db = new_user(), tmp_path / "device.db"
    # A seed push carries the initialization lease of an ``initialize_local`` attach.
    steps = ("insert:a:3", "attach", "push") if seed else ("attach", "insert:a:3", "push")
    run_killed(db, harness.base_url, user, *steps, crash=point)

    outbox, outbox_state, staged, logged, received = PUSH_POINTS[point]
    state = local_state(db)
    assert (state.outbox, state.outbox_state, state.push_stage) == (outbox, outbox_state, staged)
    # Nothing is lost locally: unfrozen rows are still dirty, frozen ones in the outbox.
    assert state.dirty == ROWS - outbox
    assert len(state.users) == BATCH[1]
    assert [b[3] for b in await bundles(harness.pg, user)] == [ROWS] * logged
    assert await push_sessions(harness.pg, user) == ([] if received is None else [(1, received)])

    lines = assert_ok(run_device(db, harness.base_url, user, "attach", "sync"))
    assert lines[-1].startswith("sync committed/"), lines

    expected = Expected.of(BATCH)
    assert [b[3] for b in await bundles(harness.pg, user)] == [ROWS]
    reader = await harness.device("reader", user=user)
    await reader.attach()
    await reader.close()
    await assert_converged(harness.pg, user, expected, [db, reader.path])


async def test_seed_push_after_another_source_initialized_drops_the_lease(
    harness: Harness,
) -> None:
    """The other branch of the lost-seed-reply fix: the rejected seed tuple is *not* committed
    (our lease ran out and another device seeded the scope), so the device lets go of its lease
    like after ``initialization_stale`` instead of pushing as if it had seeded."""
    user = new_user()
    late = await harness.device("late", user=user)
    await write_one_user(late, "late")
    assert (await late.attach()).outcome.value == "seeded_from_local"
    await harness.server_execute(
        "UPDATE sync.scope_state s SET lease_expires_at = now() - interval '1 second'"
        " FROM sync.user_state u WHERE u.user_pk = s.user_pk AND u.user_id = :u", u=user,
    )
    winner = await harness.device("winner", user=user)
    await write_one_user(winner, "winner")
    assert (await winner.attach()).outcome.value == "seeded_from_local"
    assert (await winner.c.push_pending()).outcome.value == "committed"

    with pytest.raises(PushSessionInvalidError):
        await late.c.push_pending()
    assert await push_sessions(harness.pg, user) == []
    assert await late.scalar("SELECT binding_state FROM _sync_attachment_state") == "anonymous"
    # The unsent seed is pending again as a dirty row (lease module, CLIENT.md §12.29).
    assert (await late.outbox_count(), await late.dirty_count()) == (0, 1)
    assert await bundles(harness.pg, user) == [(1, winner.c.runtime.source_id, 1, 1)]


# --------------------------------------------------------------------------- pull


async def test_pull_crash_mid_apply_keeps_applied_bundles(
    harness: Harness, tmp_path: Path
) -> None:
    """Killed while applying the 2nd pulled bundle: bundle 1 stays applied, 2 is redone."""
    user, db = new_user(), tmp_path / "device.db"
    writer = await harness.device("writer", user=user)
    await writer.attach()
    assert_ok(run_device(db, harness.base_url, user, "attach"))
    batches = [("p0", 1), ("p1", 1), ("p2", 1)]
    for prefix, count in batches:
        await write_and_push(writer, prefix, count)

    run_killed(db, harness.base_url, user, "attach", "pull", crash="client.pull.applied@2")
    assert local_state(db).users == Expected.of(batches[0]).users

    assert_ok(run_device(db, harness.base_url, user, "attach", "pull"))
    await writer.close()
    await assert_converged(harness.pg, user, Expected.of(*batches), [db, writer.path])


# --------------------------------------------------------------------------- snapshot


#: point -> (visits during one whole 6-row snapshot, the visit to die at, rows staged at death)
SNAPSHOT_POINTS = {
    "client.snapshot.chunk_staged": (3, 2, 4),
    "client.snapshot.swap_applied": (1, 1, ROWS),
}


@pytest.mark.parametrize("point", list(SNAPSHOT_POINTS))
async def test_rebuild_crash_keeps_local_state_and_rebuild_required(
    harness: Harness, tmp_path: Path, point: str
) -> None:
    """Killed while staging or swapping a rebuild: local rows are untouched, push and pull stay
    blocked by ``rebuild_required``, and a second rebuild completes from a fresh snapshot."""
    user, db = new_user(), tmp_path / "device.db"
    writer = await _writer(harness, user, BATCH)
    per_snapshot, visit, staged = SNAPSHOT_POINTS[point]
    # The first attach takes one whole snapshot (remote_authoritative); the rebuild dies.
    crash = f"{point}@{per_snapshot + visit}"
    lines = run_killed(db, harness.base_url, user, "attach", "rebuild", crash=crash)
    assert lines == ["attach used_remote_state"]

    state = local_state(db)
    expected = Expected.of(BATCH)
    assert (state.users, state.posts) == (expected.users, expected.posts)
    assert state.rebuild_required
    assert state.snapshot_stage == staged

    assert_ok(run_device(db, harness.base_url, user, "attach", "rebuild", "sync"))
    await writer.close()
    await assert_converged(harness.pg, user, Expected.of(BATCH), [db, writer.path])


@pytest.mark.parametrize("point", list(SNAPSHOT_POINTS))
async def test_remote_attach_crash_finishes_on_next_attach(
    harness: Harness, tmp_path: Path, point: str
) -> None:
    """Killed while a ``remote_authoritative`` attach stages or swaps the snapshot: the device
    stays unattached with the remote replace pending, and the next attach finishes it."""
    user, db = new_user(), tmp_path / "device.db"
    writer = await _writer(harness, user, BATCH)

    _, visit, staged = SNAPSHOT_POINTS[point]
    run_killed(db, harness.base_url, user, "attach", crash=f"{point}@{visit}")
    state = local_state(db)
    assert (state.binding, state.operation) == ("anonymous", "remote_replace")
    assert state.users == {}
    assert state.snapshot_stage == staged

    lines = assert_ok(run_device(db, harness.base_url, user, "attach", "sync"))
    assert lines[0] == "attach used_remote_state", lines
    await writer.close()
    await assert_converged(harness.pg, user, Expected.of(BATCH), [db, writer.path])


# --------------------------------------------------------------------------- attach / detach


@pytest.mark.parametrize("pending", [True, False], ids=["initialize-local", "initialize-empty"])
async def test_attach_crash_after_connect_reply(
    harness: Harness, tmp_path: Path, pending: bool
) -> None:
    """Killed after the server resolved ``connect`` but before the device persisted it: the
    next attach gets a consistent answer (the same lease, or the now-initialised scope)."""
    user, db = new_user(), tmp_path / "device.db"
    steps = ("insert:a:3", "attach") if pending else ("attach",)
    run_killed(db, harness.base_url, user, *steps, crash="client.attach.connect_reply")
    state = local_state(db)
    assert state.binding == "anonymous"
    assert state.dirty == (ROWS if pending else 0)

    rerun = ("attach", "sync") if pending else ("attach", "insert:a:3", "sync")
    lines = assert_ok(run_device(db, harness.base_url, user, *rerun))
    outcome = "seeded_from_local" if pending else "used_remote_state"
    assert lines[0] == f"attach {outcome}", lines
    reader = await harness.device("reader", user=user)
    await reader.attach()
    await reader.close()
    await assert_converged(harness.pg, user, Expected.of(BATCH), [db, reader.path])


async def test_detach_crash_rolls_back_then_detach_and_reattach(
    harness: Harness, tmp_path: Path
) -> None:
    """Killed inside detach after the tables were cleared: the device is still attached with
    all its rows; detaching again works and a re-attach restores the server's rows."""
    user, db = new_user(), tmp_path / "device.db"
    assert_ok(run_device(db, harness.base_url, user, "attach", "insert:a:3", "sync"))

    run_killed(db, harness.base_url, user, "attach", "detach", crash="client.detach.cleared")
    state = local_state(db)
    assert state.binding == "attached"
    assert state.users == Expected.of(BATCH).users

    lines = assert_ok(
        run_device(db, harness.base_url, user, "attach", "detach", "attach", "sync")
    )
    assert lines[1:3] == ["detach detached", "attach used_remote_state"], lines
    await assert_converged(harness.pg, user, Expected.of(BATCH), [db])
