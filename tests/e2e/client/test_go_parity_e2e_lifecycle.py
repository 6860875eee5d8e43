"""Attach, detach, uninstall, rebuild-required and source rotation: go-oversync's
``oversqlite_e2e`` lifecycle behaviours on the real client against the real server.

Each test ports the Go end-to-end test named in its docstring; Go tests whose behaviour another
test of ours already asserts are mapped in ``docs/go-test-parity-e2e.md`` instead. The last
section plays one of Go's "Raw" tests with hand-made protocol requests and no client, so that a
device crash between two requests is exact.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from oversync_sa.client.errors import (
    RebuildRequiredError,
    RetryExhaustedError,
    SourceRecoveryRequiredError,
)
from oversync_sa.client.results import (
    AttachOutcome,
    AttachStatus,
    DetachOutcome,
    PushOutcome,
    RemoteSyncOutcome,
    SourceRecoveryCode,
)
from tests.e2e.client._support import (
    NO_RETRY,
    Harness,
    LossyTransport,
    new_user,
    server_ids,
    two_devices,
)
from tests.e2e.client.test_e2e_lease_loss import names
from tests.e2e.client.test_e2e_recovery import add_user

pytestmark = pytest.mark.postgres

Predicate = Callable[[httpx.Request], bool]


class ScriptedTransport(httpx.AsyncBaseTransport):
    """The real network, except for one-shot canned answers and an on/off "offline" switch.

    Canned answers stand in for server behaviour our reference server has no knob for (Go's
    example server has an empty-first deferral and per-endpoint failure injection). Request
    bodies of ``capture``-matching requests are kept for inspection.
    """

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._canned: list[tuple[Predicate, httpx.Response]] = []
        self._capture: Predicate = lambda _r: False
        self.offline = False
        self.captured: list[bytes] = []
        self.requests: list[tuple[str, str]] = []

    def answer_next(self, predicate: Predicate, status: int, body: dict[str, object]) -> None:
        self._canned.append((predicate, httpx.Response(status, json=body)))

    def capture(self, predicate: Predicate) -> None:
        self._capture = predicate

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if self.offline:
            raise httpx.ConnectError("injected: offline", request=request)
        for index, (predicate, response) in enumerate(self._canned):
            if predicate(request):
                del self._canned[index]
                return response
        if self._capture(request):
            self.captured.append(await request.aread())
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def is_post(path: str) -> Predicate:
    return lambda r: r.method == "POST" and r.url.path == path


async def source_state(harness: Harness, user: str, source: str) -> tuple[str, int, str]:
    async with harness.pg.connect() as conn:
        row = (await conn.execute(text(
            "SELECT s.state, s.max_committed_source_bundle_id, s.replaced_by_source_id"
            " FROM sync.source_state s JOIN sync.user_state u USING (user_pk)"
            " WHERE u.user_id = :u AND s.source_id = :s"
        ), {"u": user, "s": source})).one()
    return str(row[0]), int(row[1]), str(row[2] or "")


# --------------------------------------------------------------------------- attach


async def test_remote_authoritative_over_an_emptied_scope_replaces_anonymous_rows(
    harness: Harness,
) -> None:
    """TestEndToEnd_ConnectRemoteAuthoritativeEmptyStillReplacesAnonymousLocalRows.

    The scope is initialized but holds no rows (inserted, then deleted): an empty snapshot is
    still the authority, so the second device's anonymous rows go.
    """
    user = new_user()
    a = await harness.device("a", user=user)
    await a.attach()
    transient = await add_user(a, "Transient")
    await a.c.push_pending()
    await a.execute("DELETE FROM users WHERE id = ?", (transient.bytes,))
    await a.c.push_pending()
    assert await server_ids(harness, user, "users") == set()
    b = await harness.device("b", user=user)
    await add_user(b, "Local")

    attached = await b.attach()

    assert (attached.status, attached.outcome) == (
        AttachStatus.CONNECTED, AttachOutcome.USED_REMOTE_STATE
    )
    assert await b.ids("users") == set()
    assert await b.dirty_count() == 0
    assert await b.c.last_bundle_seq_seen() == 2


async def test_retry_later_surfaces_retry_after_then_attach_starts_empty(
    harness: Harness,
) -> None:
    """TestEndToEnd_ConnectRetryLaterSurfacesRetryAfterThenInitializeEmpty.

    Go's example server defers an empty device's first connect; ours has no such knob, so the
    transport plays that deferral answer once and the next attach reaches the real server.
    """
    user = new_user()
    network = ScriptedTransport()
    device = await harness.device("a", user=user, transport=network)
    lease_end = (datetime.now(UTC) + timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
    network.answer_next(is_post("/sync/connect"), 200, {
        "resolution": "retry_later", "lease_expires_at": lease_end, "retry_after_seconds": 2,
    })

    first = await device.c.attach(user)

    assert (first.status, first.outcome) == (AttachStatus.RETRY_LATER, None)
    assert first.retry_after >= 1
    assert await device.scalar("SELECT attached_user_id FROM _sync_attachment_state") == ""

    second = await device.c.attach(user)

    assert (second.status, second.outcome) == (AttachStatus.CONNECTED, AttachOutcome.STARTED_EMPTY)
    assert device.c.runtime.user_id == user


async def test_concurrent_first_initializers_single_winner_then_loser_uses_remote(
    harness: Harness,
) -> None:
    """TestEndToEnd_ConcurrentFirstInitializerRaceHasSingleWinner and
    TestEndToEnd_ConcurrentFirstInitializerRaceFollowThroughConvergesLoserViaRemoteAuthoritative.

    Both devices hold anonymous rows and attach at the same time.
    """
    user = new_user()
    devices = [await harness.device(name, user=user) for name in ("a", "b")]
    own = {d.name: await add_user(d, f"From{d.name}") for d in devices}

    results = await asyncio.gather(*(d.c.attach(user) for d in devices))

    by_outcome = {(r.status, r.outcome): d for r, d in zip(results, devices, strict=True)}
    assert set(by_outcome) == {
        (AttachStatus.CONNECTED, AttachOutcome.SEEDED_FROM_LOCAL),
        (AttachStatus.RETRY_LATER, None),
    }
    winner = by_outcome[(AttachStatus.CONNECTED, AttachOutcome.SEEDED_FROM_LOCAL)]
    loser = by_outcome[(AttachStatus.RETRY_LATER, None)]
    assert (await winner.c.push_pending()).outcome is PushOutcome.COMMITTED

    follow = await loser.c.attach(user)

    assert (follow.status, follow.outcome) == (
        AttachStatus.CONNECTED, AttachOutcome.USED_REMOTE_STATE
    )
    assert await loser.ids("users") == {own[winner.name]}
    assert await server_ids(harness, user, "users") == {own[winner.name]}
    assert await loser.dirty_count() == 0


# --------------------------------------------------------------------------- detach


async def test_sync_then_detach_failure_leaves_the_user_attached(harness: Harness) -> None:
    """TestEndToEnd_SyncThenDetachFailureLeavesAttachedState."""
    user = new_user()
    network = ScriptedTransport()
    device = await harness.device("a", user=user, transport=network, retry=NO_RETRY)
    await device.attach()
    row = await add_user(device, "Pending")
    network.offline = True

    with pytest.raises(RetryExhaustedError, match="offline"):
        await device.c.sync_then_detach()

    assert device.c.runtime.user_id == user
    assert await device.scalar("SELECT attached_user_id FROM _sync_attachment_state") == user
    assert await device.ids("users") == {row}
    assert (await device.c.pending_sync_status()).blocks_detach
    network.offline = False
    assert (await device.c.sync_then_detach()).is_success
    assert await server_ids(harness, user, "users") == {row}
    assert device.c.runtime.user_id == ""


async def test_same_user_reattach_after_detach_pushes_again(harness: Harness) -> None:
    """TestEndToEnd_SameUserSameSourceCanDetachAttachAndPushAgain - differs by design.

    Go keeps the source and its ``next_source_bundle_id`` (2 after one push) across Detach; we
    rotate a source that has pushed when detaching (CLIENT.md §12.28: the counter is per device
    but the server's sequence is per user and source). What must hold either way: the second
    push commits and the server has both rows.
    """
    user = new_user()
    device = await harness.device("a", user=user)
    await device.attach()
    first = await add_user(device, "First")
    await device.c.push_pending()
    assert await device.next_source_bundle_id() == 2
    old_source = device.c.runtime.source_id
    assert (await device.c.detach()).outcome is DetachOutcome.DETACHED
    await device.c.open()

    assert (await device.attach()).outcome is AttachOutcome.USED_REMOTE_STATE
    second = await add_user(device, "Second")

    assert (await device.c.push_pending()).outcome is PushOutcome.COMMITTED

    assert device.c.runtime.source_id != old_source
    assert await device.next_source_bundle_id() == 2
    assert await server_ids(harness, user, "users") == {first, second}
    assert (await source_state(harness, user, device.c.runtime.source_id))[:2] == ("active", 1)
    assert not (await device.c.source_info()).source_recovery_required


async def test_detach_after_restart_needs_no_reattach(harness: Harness) -> None:
    """TestEndToEnd_DetachAfterOpenOverDurableAttachedStateSucceedsWithoutReattach."""
    first, second = new_user("first"), new_user("second")
    device = await harness.device("a", user=first)
    await device.attach()
    await device.restart()  # open only: the durable attachment is not resumed yet

    assert (await device.c.detach()).outcome is DetachOutcome.DETACHED

    assert await device.scalar("SELECT attached_user_id FROM _sync_attachment_state") == ""
    attached = await device.attach(second)
    assert attached.status is AttachStatus.CONNECTED
    assert device.c.runtime.user_id == second


async def test_uninstall_then_reinstall_hydrates_from_the_server(harness: Harness) -> None:
    """TestEndToEnd_UninstallSyncThenReinstallOpenAndConnectOnSameDatabase.

    After UninstallSync the tables are plain app tables (no capture): a local delete is not
    an edit to sync, and the reinstalled client's attach takes the server's state again.
    """
    user = new_user()
    device = await harness.device("a", user=user)
    await device.attach()
    row = await add_user(device, "Remote")
    await device.c.push_pending()

    await device.c.uninstall_sync()
    await device.execute("DELETE FROM users WHERE id = ?", (row.bytes,))
    assert await device.scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '\\_sync\\_%' ESCAPE '\\'"
    ) == 0
    await device.restart()

    attached = await device.attach()

    assert (attached.status, attached.outcome) == (
        AttachStatus.CONNECTED, AttachOutcome.USED_REMOTE_STATE
    )
    assert await names(device) == {row: "Remote"}
    assert await server_ids(harness, user, "users") == {row}
    assert await device.dirty_count() == 0


# --------------------------------------------------------------------------- rebuild required


async def test_rebuild_required_blocks_sync_without_network_until_rebuild(
    harness: Harness,
) -> None:
    """TestEndToEnd_RebuildRequiredBlocksSyncUntilExplicitRebuild."""
    network = ScriptedTransport()
    _user, a, b = await two_devices(harness, b_options={"transport": network})
    one = await add_user(a, "RemoteOne")
    await a.c.push_pending()
    await b.c.pull_to_stable()
    two = await add_user(a, "RemoteTwo")
    await a.c.push_pending()
    await b.execute("UPDATE _sync_attachment_state SET rebuild_required = 1")
    info = await b.c.source_info()
    assert (info.rebuild_required, info.source_recovery_required) == (True, False)
    network.requests.clear()

    for operation in (b.c.push_pending, b.c.pull_to_stable, b.c.sync):
        with pytest.raises(RebuildRequiredError):
            await operation()

    assert network.requests == []
    assert (await b.c.rebuild()).outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    info = await b.c.source_info()
    assert (info.rebuild_required, info.source_recovery_required) == (False, False)
    assert await names(b) == {one: "RemoteOne", two: "RemoteTwo"}
    assert await b.c.last_bundle_seq_seen() == 2


# --------------------------------------------------------------------------- source rotation


async def test_source_rotation_is_visible_over_http_and_survives_restart(
    harness: Harness,
) -> None:
    """TestEndToEnd_SourceRetirementIsVisibleOverHTTPAndReplacementBecomesActive and
    TestEndToEnd_SourceRecoveryRebuildRotatesManagedSourceAndSurvivesRestart.

    The push create is answered ``history_pruned`` once (as the Go tests inject it). The
    rotated rebuild must name old and new source and the reason on the wire, the server must
    retire the old source in favour of the new one, and the rotation must survive a restart
    with the pending local row intact.
    """
    user = new_user()
    a = await harness.device("a", user=user)
    await a.attach()
    remote = await add_user(a, "Remote")
    await a.c.push_pending()
    network = ScriptedTransport()
    b = await harness.device("b", user=user, transport=network)
    await b.attach()
    old_source = b.c.runtime.source_id
    pending = await add_user(b, "Pending")
    network.answer_next(is_post("/sync/push-sessions"), 409, {
        "error": "history_pruned", "message": "source tuple is below retained history floor",
    })
    network.capture(is_post("/sync/snapshot-sessions"))

    with pytest.raises(SourceRecoveryRequiredError) as caught:
        await b.c.push_pending()

    assert caught.value.code == "history_pruned"
    info = await b.c.source_info()
    assert (info.rebuild_required, info.source_recovery_required) == (True, True)
    assert info.source_recovery_reason is SourceRecoveryCode.HISTORY_PRUNED

    assert (await b.c.rebuild()).outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT

    new_source = b.c.runtime.source_id
    assert new_source != old_source
    info = await b.c.source_info()
    assert (info.current_source_id, info.rebuild_required, info.source_recovery_required) == (
        new_source, False, False
    )
    assert [json.loads(body) for body in network.captured] == [{"source_replacement": {
        "previous_source_id": old_source, "new_source_id": new_source,
        "reason": "history_pruned",
    }}]
    assert await source_state(harness, user, old_source) == ("retired", 0, new_source)
    client = await harness.http()
    refused = await client.post(
        "/sync/push-sessions", json={"source_bundle_id": 1, "planned_row_count": 1},
        headers={"Authorization": f"Bearer {await harness.token(user)}",
                 "Oversync-Source-ID": old_source},
    )
    assert refused.status_code == 409
    assert refused.json()["error"] == "source_retired"
    assert refused.json()["source_id"] == old_source
    assert refused.json()["replaced_by_source_id"] == new_source

    await b.restart(transport=LossyTransport())
    assert b.c.runtime.source_id == new_source
    assert (await b.attach()).outcome is AttachOutcome.RESUMED_ATTACHED_STATE
    assert await names(b) == {remote: "Remote", pending: "Pending"}
    later = await add_user(b, "Later")
    # The preserved outbox goes first, alone, as the new source's bundle 1 (CLIENT.md §5.0
    # step 6); the row written after the rotation waits for the next push.
    assert (await b.c.push_pending()).outcome is PushOutcome.COMMITTED
    assert await source_state(harness, user, new_source) == ("active", 1, "")
    assert await server_ids(harness, user, "users") == {remote, pending}
    assert await b.dirty_count() == 1
    assert (await b.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert await server_ids(harness, user, "users") == {remote, pending, later}
    assert await source_state(harness, user, new_source) == ("active", 2, "")


# --------------------------------------------------------------------------- raw protocol


class RawSource:
    """The requests of one source of one user, made by hand: a crash between them is exact."""

    def __init__(self, harness: Harness, user: str, source: str) -> None:
        self.harness = harness
        self.user = user
        self.source = source

    async def call(self, method: str, path: str, status: int, body: Any = None) -> Any:
        client = await self.harness.http()
        response = await client.request(
            method, path, json=body,
            headers={"Authorization": f"Bearer {await self.harness.token(self.user)}",
                     "Oversync-Source-ID": self.source},
        )
        assert response.status_code == status, response.text
        return response.json()

    async def connect(self, pending: bool) -> dict[str, Any]:
        reply: dict[str, Any] = await self.call(
            "POST", "/sync/connect", 200, {"has_local_pending_rows": pending}
        )
        return reply

    async def stage_seed(self, initialization_id: str, row: uuid.UUID, name: str) -> str:
        """Create the seed's push session and upload its only row; returns the push id."""
        session = await self.call("POST", "/sync/push-sessions", 200, {
            "source_bundle_id": 1, "planned_row_count": 1,
            "initialization_id": initialization_id,
        })
        assert session["status"] == "staging"
        push_id = str(session["push_id"])
        await self.call("POST", f"/sync/push-sessions/{push_id}/chunks", 200, {
            "start_row_ordinal": 0,
            "rows": [{
                "schema": "business", "table": "users", "key": {"id": str(row)},
                "op": "INSERT", "base_row_version": 0,
                "payload": {"id": str(row), "name": name, "email": f"{row.hex}@example.com"},
            }],
        })
        return push_id


async def scope_state(harness: Harness, user: str) -> int:
    return int(await harness.server_scalar(
        "SELECT s.state_code FROM sync.scope_state s JOIN sync.user_state u USING (user_pk)"
        " WHERE u.user_id = :u",
        u=user,
    ))


async def test_initializer_crash_before_commit_leaks_nothing_and_a_later_seed_wins(
    harness: Harness,
) -> None:
    """TestEndToEnd_RawInitializerCrashBeforeCommitDoesNotLeakAuthoritativeRowsAndLaterCallerRecovers.

    Device A wins the lease, stages its seed and "crashes" before committing. Staged rows are
    not business rows; once A's lease has run out, device B gets a fresh lease, and its seed
    commit initializes the scope without A's row. A's late commit is refused.
    """
    user = new_user()
    a = RawSource(harness, user, "device-a")
    b = RawSource(harness, user, "device-b")
    first = await a.connect(pending=True)
    assert first["resolution"] == "initialize_local"
    crashed = uuid.uuid4()

    stale_push = await a.stage_seed(first["initialization_id"], crashed, "Crashed Seed")

    assert await scope_state(harness, user) == 1  # INITIALIZING
    assert await harness.server_scalar(
        "SELECT COUNT(*) FROM sync.push_session_rows WHERE push_id = CAST(:p AS uuid)",
        p=stale_push,
    ) == 1
    assert await server_ids(harness, user, "users") == set()

    # A's lease runs out (Go waits out a 200 ms TTL; ours is moved into the past).
    await harness.server_execute(
        "UPDATE sync.scope_state s SET lease_expires_at = now() - interval '1 second'"
        " FROM sync.user_state u WHERE u.user_pk = s.user_pk AND u.user_id = :u",
        u=user,
    )
    second = await b.connect(pending=True)
    assert second["resolution"] == "initialize_local"
    assert second["initialization_id"] not in ("", first["initialization_id"])
    recovered = uuid.uuid4()
    push = await b.stage_seed(second["initialization_id"], recovered, "Recovered Seed")
    committed = await b.call("POST", f"/sync/push-sessions/{push}/commit", 200)

    assert committed["bundle_seq"] == 1
    assert await scope_state(harness, user) == 2  # INITIALIZED
    assert await server_ids(harness, user, "users") == {recovered}
    late = await a.call("POST", f"/sync/push-sessions/{stale_push}/commit", 409)
    assert late["error"] == "initialization_stale"
    assert await server_ids(harness, user, "users") == {recovered}
