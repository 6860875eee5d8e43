"""Push, pull, conflicts, chunking and retries: go-oversync's ``oversqlite_e2e`` behaviours.

Each test ports one Go end-to-end test (named in its docstring) onto the real client against the
real reference server over real HTTP. Where an existing test of ours already asserts the same
behaviour the Go test is mapped to it in ``docs/go-test-parity-e2e.md`` instead of being ported
again; the tests here are the ones whose behaviour was not asserted end to end yet (checkpoint
gaps after our own pushes, chunked sessions under conflicts, chunked snapshot fallbacks,
injected 503s on push and pull).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from oversync_sa.client.conflicts import (
    ClientWinsResolver,
    ConflictContext,
    KeepLocal,
    MergeResult,
)
from oversync_sa.client.errors import RetryExhaustedError
from oversync_sa.client.results import AttachOutcome, PushOutcome, RemoteSyncOutcome
from oversync_sa.testing.faults import (
    FaultAction,
    FaultTransport,
    drop_request,
    fail_status,
)
from tests.e2e.client._support import (
    FAST_RETRY,
    INSERT_POST,
    INSERT_USER,
    NO_RETRY,
    Device,
    Harness,
    LossyTransport,
    is_push_create,
    new_id,
    new_user,
    server_ids,
    two_devices,
)
from tests.e2e.client.test_e2e_lease_loss import names, server_names
from tests.e2e.client.test_e2e_recovery import add_user

pytestmark = pytest.mark.postgres

UPDATE_NAME = "UPDATE users SET name = ? WHERE id = ?"
PUSH_CREATE = "/sync/push-sessions"
SNAPSHOT_CHUNK = "/sync/snapshot-sessions/*"


class Always:
    """A resolver that gives the same answer to every conflict, counting the calls."""

    def __init__(self, result: MergeResult) -> None:
        self.result = result
        self.calls = 0

    def resolve(self, context: ConflictContext) -> MergeResult:
        self.calls += 1
        return self.result


async def server_rename(harness: Harness, user: str, row: uuid.UUID, name: str) -> int:
    """A server-originated bundle renaming ``row``; returns its bundle sequence."""
    result = await harness.server_write(user, [(
        "UPDATE business.users SET name = :n WHERE _sync_scope_id = :scope AND id = :id",
        {"n": name, "id": row},
    )])
    return result.bundle.bundle_seq


async def shared_row(
    harness: Harness, resolver: Any = None, **b_options: Any
) -> tuple[str, Device, Device, uuid.UUID]:
    """``a`` and ``b`` attached to one user; ``a`` pushed one row (bundle 1), ``b`` pulled it."""
    user, a, b = await two_devices(harness, resolver, b_options=b_options)
    row = await add_user(a, "Original")
    assert (await a.c.push_pending()).outcome is PushOutcome.COMMITTED
    assert (await b.c.pull_to_stable()).outcome is RemoteSyncOutcome.APPLIED_INCREMENTAL
    assert await b.c.last_bundle_seq_seen() == 1
    return user, a, b, row


async def own_push_after_unseen_peer(harness: Harness) -> tuple[Device, uuid.UUID, uuid.UUID]:
    """``a`` pushed a row (bundle 1), then ``b``, which never pulled it, pushed its own
    (bundle 2). Returns ``b`` and the two rows."""
    _user, a, b = await two_devices(harness)
    from_a = await add_user(a, "FromA")
    await a.c.push_pending()
    from_b = await add_user(b, "FromB")
    await b.c.push_pending()
    return b, from_a, from_b


# --------------------------------------------------------------------------- conflicts


async def test_client_wins_commits_over_unseen_bundles_without_jumping_the_checkpoint(
    harness: Harness,
) -> None:
    """TestEndToEnd_ConflictClientWinsResolverStillConvergesWithUnseenPeerBundle.

    B's winning bundle lands at seq 4 while B has seen only seq 1: the checkpoint must stay at 1
    (CLIENT.md §12.9) so that the following pull still fetches the peer's bundle 2.
    """
    user, a, b, row = await shared_row(harness, ClientWinsResolver())
    peer = await add_user(a, "Peer")
    await a.c.push_pending()  # bundle 2, unseen by B
    assert await server_rename(harness, user, row, "Server") == 3
    await b.execute(UPDATE_NAME, ("Client", row.bytes))

    assert (await b.c.push_pending()).outcome is PushOutcome.COMMITTED

    assert await b.c.last_bundle_seq_seen() == 1
    assert (await server_names(harness, user))[row] == "Client"
    assert (await b.c.pull_to_stable()).outcome is RemoteSyncOutcome.APPLIED_INCREMENTAL
    assert await b.c.last_bundle_seq_seen() == 4
    assert await names(b) == {row: "Client", peer: "Peer"}
    assert await b.dirty_count() == 0


async def test_keep_local_resolution_is_retried_automatically_and_wins(harness: Harness) -> None:
    """TestEndToEnd_ConflictKeepLocalResolverAutoRetriesAndWins."""
    resolver = Always(KeepLocal())
    user, _a, b, row = await shared_row(harness, resolver)
    await server_rename(harness, user, row, "Server")
    await b.execute(UPDATE_NAME, ("Local", row.bytes))

    report = await b.c.push_pending()

    assert report.outcome is PushOutcome.COMMITTED
    assert resolver.calls == 1
    assert (await server_names(harness, user))[row] == "Local"
    await b.c.pull_to_stable()
    assert await names(b) == {row: "Local"}
    assert await b.dirty_count() == await b.outbox_count() == 0


async def test_chunked_push_conflict_retries_the_whole_bundle(harness: Harness) -> None:
    """TestEndToEnd_ChunkedPushConflictPreservesWholeBundleSemantics.

    Three rows in chunks of two: the conflict on one row rejects the whole bundle at commit;
    the retry is a second staging session re-uploading all three rows under the same source
    bundle id, and the push leaves no frozen or staged row behind.
    """
    user, _a, b, row = await shared_row(harness, ClientWinsResolver(), upload_limit=2)
    await server_rename(harness, user, row, "Server")
    await b.execute(UPDATE_NAME, ("Client", row.bytes))
    one, two = await add_user(b, "ExtraOne"), await add_user(b, "ExtraTwo")
    b.c.push_stats.reset()

    assert (await b.c.push_pending()).outcome is PushOutcome.COMMITTED

    assert b.c.push_stats.sessions_created == 2
    assert b.c.push_stats.chunks_uploaded == 4
    assert await b.dirty_count() == await b.outbox_count() == 0
    assert await b.scalar("SELECT COUNT(*) FROM _sync_push_stage") == 0
    assert await b.next_source_bundle_id() == 2
    assert await server_names(harness, user) == {row: "Client", one: "ExtraOne", two: "ExtraTwo"}


# --------------------------------------------------------------------------- checkpoint gaps


async def test_own_push_does_not_skip_an_earlier_peer_bundle(harness: Harness) -> None:
    """TestEndToEnd_PushThenOwnPushThenPullStillFetchesEarlierPeerBundle."""
    b, from_a, from_b = await own_push_after_unseen_peer(harness)

    # B's bundle is seq 2 but B never saw seq 1: moving the checkpoint would lose A's row.
    assert await b.c.last_bundle_seq_seen() == 0
    assert (await b.c.pull_to_stable()).outcome is RemoteSyncOutcome.APPLIED_INCREMENTAL
    assert await names(b) == {from_a: "FromA", from_b: "FromB"}
    assert await b.c.last_bundle_seq_seen() == 2


async def test_three_devices_push_without_pulling_then_converge(harness: Harness) -> None:
    """TestEndToEnd_ThreeDevicesPushWithoutPullThenAllPullConverge."""
    user = new_user()
    devices = [await harness.device(name, user=user) for name in ("a", "b", "c")]
    for device in devices:
        await device.attach()
    rows = {}
    for device in devices:
        rows[await add_user(device, f"From{device.name}")] = f"From{device.name}"
        await device.c.push_pending()
    # Only the first pusher's bundle directly followed its checkpoint.
    assert [await d.c.last_bundle_seq_seen() for d in devices] == [1, 0, 0]

    for device in devices:
        await device.c.pull_to_stable()

    for device in devices:
        assert await names(device) == rows
        assert await device.c.last_bundle_seq_seen() == 3
        assert await device.dirty_count() == 0


async def test_restart_between_own_push_and_pull_still_fetches_the_peer_bundle(
    harness: Harness,
) -> None:
    """TestEndToEnd_RestartAfterOwnPushBeforePullStillFetchesEarlierPeerBundle."""
    b, from_a, from_b = await own_push_after_unseen_peer(harness)

    await b.restart()
    assert (await b.attach()).outcome is AttachOutcome.RESUMED_ATTACHED_STATE
    await b.c.pull_to_stable()

    assert await names(b) == {from_a: "FromA", from_b: "FromB"}
    assert await b.c.last_bundle_seq_seen() == 2


# --------------------------------------------------------------------------- payload shapes


async def test_nanosecond_timestamps_reach_the_servers_timestamp_columns(
    harness: Harness,
) -> None:
    """TestEndToEnd_ExampleServerSchemaTimestampParity.

    Go writes ``time.RFC3339Nano`` text (nine fractional digits) into the TEXT timestamp columns
    of users and posts; the server's columns are ``timestamptz`` (microseconds). The push must
    be accepted, and the server's rendering of the value must not leave a requeued edit behind.
    """
    user = new_user()
    device = await harness.device("a", user=user)
    await device.attach()
    author, post = new_id(), new_id()
    stamp = "2026-03-24T18:42:11.123456789Z"
    await device.execute_many([
        ("INSERT INTO users (id, name, email, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
         (author.bytes, "Ada", "ada@example.com", stamp, stamp)),
        ("INSERT INTO posts (id, title, content, author_id, created_at, updated_at)"
         " VALUES (?, ?, ?, ?, ?, ?)", (post.bytes, "Hello", "Body", author.bytes, stamp, stamp)),
    ])

    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED

    [server_user] = await harness.server_rows(user, "users", "created_at, updated_at")
    assert server_user["created_at"] is not None
    assert server_user["created_at"] == server_user["updated_at"]
    # timestamptz keeps microseconds: the nanoseconds are rounded, the instant is kept.
    assert server_user["created_at"] == datetime(2026, 3, 24, 18, 42, 11, 123457, tzinfo=UTC)
    assert await server_ids(harness, user, "posts") == {post}
    assert await device.dirty_count() == await device.outbox_count() == 0


# --------------------------------------------------------------------------- transport failures


async def test_push_create_lost_in_transit_keeps_the_frozen_bundle(harness: Harness) -> None:
    """TestEndToEnd_PushSessionCreateTransportRetryLeavesClientRecoverable."""
    network = LossyTransport()
    user, a, b = await two_devices(
        harness, a_options={"transport": network, "retry": NO_RETRY}
    )
    row = await add_user(a, "Ada")
    network.fail_before(is_push_create)

    with pytest.raises(RetryExhaustedError, match="injected"):
        await a.c.push_pending()

    # Frozen before the request: the same bundle is what the next push sends.
    assert await a.dirty_count() == 0
    assert await a.outbox_count() == 1
    assert await server_ids(harness, user, "users") == set()
    assert (await a.c.push_pending()).outcome is PushOutcome.COMMITTED
    assert network.count("POST", PUSH_CREATE) == 2
    assert await a.next_source_bundle_id() == 2
    assert (await b.c.rebuild()).outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    assert await names(b) == {row: "Ada"}


async def test_push_create_503_is_retried(harness: Harness) -> None:
    """TestEndToEnd_PushPending_RetriesInjectedTransientFailure."""
    faults = FaultTransport([fail_status(503, "POST", PUSH_CREATE, nth=1)])
    user = new_user()
    device = await harness.device("a", user=user, transport=faults, retry=FAST_RETRY)
    await device.attach()
    row = await add_user(device, "Retry")

    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED

    assert [e.action for e in faults.log] == [FaultAction.FAIL_STATUS]
    assert faults.injector.count("POST", PUSH_CREATE) == 2
    assert await server_ids(harness, user, "users") == {row}


async def test_push_create_503_exhaustion_is_a_typed_error(harness: Harness) -> None:
    """TestEndToEnd_PushPending_RetryExhaustionReturnsTypedError."""
    faults = FaultTransport([fail_status(503, "POST", PUSH_CREATE, nth=[1, 2, 3])])
    user = new_user()
    device = await harness.device("a", user=user, transport=faults, retry=FAST_RETRY)
    await device.attach()
    row = await add_user(device, "Retry")

    with pytest.raises(RetryExhaustedError) as caught:
        await device.c.push_pending()

    assert caught.value.operation == "push_pending"
    assert caught.value.attempts == 3
    assert await server_ids(harness, user, "users") == set()
    # Nothing lost: the next push (the server answers again) sends the frozen bundle.
    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED
    assert await server_ids(harness, user, "users") == {row}


async def test_pull_503_exhaustion_is_a_typed_error(harness: Harness) -> None:
    """TestEndToEnd_PullToStable_RetryExhaustionReturnsTypedError."""
    faults = FaultTransport([fail_status(503, "GET", "/sync/pull", nth=[1, 2, 3])])
    _user, a, b = await two_devices(
        harness, b_options={"transport": faults, "retry": FAST_RETRY}
    )
    row = await add_user(a, "Remote")
    await a.c.push_pending()

    with pytest.raises(RetryExhaustedError) as caught:
        await b.c.pull_to_stable()

    assert caught.value.operation == "pull_request"
    assert caught.value.attempts == 3
    assert await b.c.last_bundle_seq_seen() == 0
    assert (await b.c.pull_to_stable()).outcome is RemoteSyncOutcome.APPLIED_INCREMENTAL
    assert await names(b) == {row: "Remote"}


# --------------------------------------------------------------------------- chunked snapshots


async def test_stale_follower_falls_back_to_a_chunked_snapshot(harness: Harness) -> None:
    """TestEndToEnd_StaleFollowerConvergesAfterChunkedPushAndPruneFallback."""
    network = LossyTransport()
    user, a, b = await two_devices(
        harness, a_options={"upload_limit": 2},
        b_options={"transport": network, "snapshot_chunk_rows": 2},
    )
    await a.execute_many(
        (INSERT_USER, (new_id().bytes, f"User {i}", f"user{i}@example.com")) for i in range(5)
    )
    a.c.push_stats.reset()

    await a.c.push_pending()

    assert a.c.push_stats.chunks_uploaded == 3
    stable = await a.c.last_bundle_seq_seen()
    assert stable == 1
    assert await b.c.last_bundle_seq_seen() == 0
    await harness.set_retention_floor(user, stable)
    network.requests.clear()  # b's attach hydrated an empty snapshot already

    report = await b.c.pull_to_stable()

    assert report.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    assert _snapshot_chunk_gets(network) == 3  # 5 rows, 2 per chunk
    assert await b.ids("users") == await server_ids(harness, user, "users")
    assert len(await b.ids("users")) == 5
    assert await b.c.last_bundle_seq_seen() == stable


async def test_chunked_hydrate_keeps_children_whose_parents_are_in_other_chunks(
    harness: Harness,
) -> None:
    """TestEndToEnd_LargeFKConnectedHydrateUsesChunkedSnapshot."""
    network = LossyTransport()
    _user, a, b = await two_devices(
        harness, b_options={"transport": network, "snapshot_chunk_rows": 10}
    )
    statements: list[tuple[str, tuple[Any, ...]]] = []
    for i in range(3):
        author = new_id()
        statements.append((INSERT_USER, (author.bytes, f"User {i}", f"user{i}@example.com")))
        statements += [
            (INSERT_POST, (new_id().bytes, f"Post {i}-{j}", f"Content {i}-{j}", author.bytes))
            for j in range(10)
        ]
    await a.execute_many(statements)
    await a.c.push_pending()
    network.requests.clear()  # b's attach hydrated an empty snapshot already

    report = await b.c.rebuild()

    assert report.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    assert network.count("POST", "/sync/snapshot-sessions") == 1
    assert _snapshot_chunk_gets(network) == 4  # 33 rows, 10 per chunk
    assert len(await b.ids("users")) == 3
    assert len(await b.ids("posts")) == 30
    assert await b.rows(
        "SELECT COUNT(*) FROM posts p LEFT JOIN users u ON u.id = p.author_id WHERE u.id IS NULL"
    ) == [(0,)]


def _snapshot_chunk_gets(network: LossyTransport) -> int:
    return sum(
        1 for method, path in network.requests
        if method == "GET" and path.startswith("/sync/snapshot-sessions/")
    )


async def test_failed_chunked_rebuild_is_redone_from_a_new_session(harness: Harness) -> None:
    """TestEndToEnd_RebuildRetryClearsStaleStageAndStartsNewSession."""
    faults = FaultTransport()
    _user, a, b = await two_devices(
        harness, b_options={"transport": faults, "retry": NO_RETRY, "snapshot_chunk_rows": 1}
    )
    rows = {await add_user(a, f"User{i}") for i in range(3)}
    await a.c.push_pending()
    # The first chunk of the rebuild arrives, every later one is lost.
    faults.injector.add(drop_request("GET", SNAPSHOT_CHUNK, nth=range(2, 50)))

    with pytest.raises(RetryExhaustedError):
        await b.c.rebuild()

    assert await b.scalar("SELECT COUNT(*) FROM _sync_snapshot_stage") > 0
    assert await b.ids("users") == set()
    assert (await b.c.source_info()).rebuild_required
    failed_session = _chunk_sessions(faults)[-1]

    faults.injector.clear()
    report = await b.c.rebuild()

    assert report.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    # Restarted from zero in a new session, not resumed from the half-filled stage.
    new_session = _chunk_sessions(faults)[-1]
    assert new_session != failed_session
    fetched = [(r.method, r.path) for r in faults.requests]
    assert fetched.count(("GET", f"/sync/snapshot-sessions/{new_session}")) == 3
    assert await b.scalar("SELECT COUNT(*) FROM _sync_snapshot_stage") == 0
    assert await b.ids("users") == rows
    assert not (await b.c.source_info()).rebuild_required


def _chunk_sessions(faults: FaultTransport) -> list[str]:
    """Snapshot ids of the chunk requests, in request order, without repeats."""
    seen: list[str] = []
    for record in faults.requests:
        if record.method == "GET" and record.path.startswith("/sync/snapshot-sessions/"):
            session = record.path.rsplit("/", 1)[1]
            if session not in seen:
                seen.append(session)
    return seen
