"""Crash windows (§5.6), fail-closed verification and every server rejection of a push."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client import RetryPolicy, push as push_module
from oversync_sa.client.errors import (
    AttachRequiredError,
    BundleHashMismatchError,
    ProtocolViolationError,
    RebuildRequiredError,
    RetryExhaustedError,
    SourceRecoveryRequiredError,
    SourceReplacementDivergedError,
    UnexpectedStatusError,
)
from oversync_sa.client.push import PushTransferStats, push_pending
from oversync_sa.client.results import PushOutcome, RestoreSummary
from oversync_sa.client.runtime import ClientRuntime
from oversync_sa.errors import (
    InitializationExpiredError,
    PushChunkOutOfOrderError,
    PushSessionCreateFailedError,
    ScopeUninitializedError,
)

from .conftest import SOURCE, Harness, commit_body, error

NO_RETRY = RetryPolicy(enabled=False)


async def _one_doc(harness: Harness) -> None:
    await harness.sql("INSERT INTO docs VALUES ('d1', 'hello')")


async def _assert_replayed_once(harness: Harness) -> None:
    assert await harness.outbox_state() == ("none", 0, 0, 0)
    assert await harness.row_state("docs", '{"id":"d1"}') == (1, 0)
    assert await harness.next_bundle_id() == 2
    assert await harness.checkpoint() == 1
    assert len(harness.server.bundles) == 1


# --------------------------------------------------------------------------- crash windows


async def test_lost_commit_reply_is_recovered_by_already_committed(harness: Harness) -> None:
    """Commit succeeds server-side, the reply is lost; the retry finds it already committed."""
    await _one_doc(harness)

    def commit_then_drop(request: httpx.Request) -> httpx.Response:
        harness.server.commit_session(request.url.path.split("/")[3])
        raise httpx.ReadError("connection reset by peer", request=request)

    harness.server.push_script("commit", commit_then_drop)
    report = await push_pending(await harness.runtime())

    assert report.outcome is PushOutcome.COMMITTED
    assert [b.get("status") for b in harness.server.bodies("create")] == [None, None]
    await _assert_replayed_once(harness)


async def test_lost_commit_reply_then_restart(harness: Harness) -> None:
    await _one_doc(harness)

    def commit_then_drop(request: httpx.Request) -> httpx.Response:
        harness.server.commit_session(request.url.path.split("/")[3])
        raise httpx.ReadError("broken pipe", request=request)

    harness.server.push_script("commit", commit_then_drop)
    with pytest.raises(RetryExhaustedError):
        await push_pending(await harness.runtime(retry=NO_RETRY))
    assert (await harness.outbox_state())[0] == "prepared"
    assert await harness.checkpoint() == 0

    stats = PushTransferStats()
    report = await push_pending(await harness.runtime(), stats=stats)  # "restarted" client
    assert report.outcome is PushOutcome.COMMITTED
    assert (stats.sessions_created, stats.chunks_uploaded, stats.committed_bundle_chunks_read) == (
        0, 0, 1,
    )
    await _assert_replayed_once(harness)


async def test_crash_before_replay_resumes_without_upload(harness: Harness) -> None:
    await _one_doc(harness)
    runtime = await harness.runtime()

    async def crash(_: AsyncConnection | None) -> None:
        raise RuntimeError("simulated crash")

    runtime.hooks.before_push_replay = crash
    with pytest.raises(RuntimeError):
        await push_pending(runtime)
    assert await harness.outbox_state() == ("committed_remote", 1, 1, 1)
    assert await harness.checkpoint() == 0
    assert await harness.next_bundle_id() == 1

    stats = PushTransferStats()
    assert (await push_pending(runtime, stats=stats)).outcome is PushOutcome.COMMITTED
    assert (stats.sessions_created, stats.chunks_uploaded, stats.committed_bundle_chunks_read) == (
        0, 0, 1,
    )
    await _assert_replayed_once(harness)


async def test_crash_before_commit_resends_same_bundle(harness: Harness) -> None:
    await _one_doc(harness)
    runtime = await harness.runtime()

    async def crash(_: AsyncConnection | None) -> None:
        raise RuntimeError("simulated crash")

    runtime.hooks.before_push_commit = crash
    with pytest.raises(RuntimeError):
        await push_pending(runtime)
    assert harness.server.deleted_sessions == ["push-1"]
    await harness.sql("UPDATE docs SET body = 'later' WHERE id = 'd1'")  # lands in dirty rows

    assert (await push_pending(runtime)).outcome is PushOutcome.COMMITTED
    first, second = harness.server.bodies("chunk")
    assert first == second  # the frozen bundle is re-sent verbatim
    assert [b["source_bundle_id"] for b in harness.server.bodies("create")] == [1, 1]
    # The later edit is rebased on the committed version, not lost.
    assert [(op, base) for _, _, op, base, _ in await harness.dirty()] == [("UPDATE", 1)]


async def test_failed_freeze_hook_rolls_back(harness: Harness) -> None:
    await _one_doc(harness)
    runtime = await harness.runtime()

    async def fail(conn: AsyncConnection | None) -> None:
        assert conn is not None
        raise RuntimeError("boom")

    runtime.hooks.before_push_freeze = fail
    with pytest.raises(RuntimeError):
        await push_pending(runtime)
    assert len(await harness.dirty()) == 1
    assert await harness.outbox_state() == ("none", 0, 0, 0)
    assert harness.server.requests == []
    assert (await push_pending(runtime)).outcome is PushOutcome.COMMITTED  # hook was one-shot


async def test_rebase_of_edits_made_during_upload(harness: Harness) -> None:
    await harness.synced("docs", "d1", "'d1', 'v0'", 7)
    await harness.synced("docs", "d2", "'d2', 'v0'", 7)
    await harness.sql("UPDATE docs SET body = 'First' WHERE id = 'd1'")
    await harness.sql("DELETE FROM docs WHERE id = 'd2'")
    await harness.sql("INSERT INTO docs VALUES ('n1', 'First')")
    runtime = await harness.runtime()
    harness.server.next_seq = 11

    async def edit(_: AsyncConnection | None) -> None:
        await harness.sql("UPDATE docs SET body = 'Second' WHERE id = 'd1'")
        await harness.sql("INSERT INTO docs VALUES ('d2', 'Recreated')")
        await harness.sql("DELETE FROM docs WHERE id = 'n1'")

    runtime.hooks.before_push_commit = edit
    await push_pending(runtime)

    assert sorted(await harness.rows("SELECT id, body FROM docs")) == [
        ("d1", "Second"), ("d2", "Recreated"),
    ]
    assert await harness.row_state("docs", '{"id":"d1"}') == (11, 0)
    assert await harness.row_state("docs", '{"id":"d2"}') == (11, 1)
    assert await harness.row_state("docs", '{"id":"n1"}') == (11, 0)
    assert sorted((k, op, base, p) for _, k, op, base, p in await harness.dirty()) == [
        ('{"id":"d1"}', "UPDATE", 11, '{"id":"d1","body":"Second"}'),
        ('{"id":"d2"}', "INSERT", 11, '{"id":"d2","body":"Recreated"}'),
        ('{"id":"n1"}', "DELETE", 11, None),
    ]
    assert await harness.value("SELECT apply_mode FROM _sync_apply_state") == 0


async def test_checkpoint_does_not_jump_a_gap(harness: Harness) -> None:
    await _one_doc(harness)
    harness.server.next_seq = 5
    await push_pending(await harness.runtime())
    assert await harness.checkpoint() == 0
    assert await harness.next_bundle_id() == 2


# --------------------------------------------------------------------------- fail closed


async def test_wrong_bundle_hash_fails_closed(harness: Harness) -> None:
    await _one_doc(harness)
    original = harness.server.commit_session

    def corrupt(push_id: str):  # type: ignore[no-untyped-def]
        done = original(push_id)
        done.hash = "0" * 64
        return done

    harness.server.commit_session = corrupt  # type: ignore[method-assign]
    with pytest.raises(BundleHashMismatchError):
        await push_pending(await harness.runtime())
    assert await harness.outbox_state() == ("committed_remote", 1, 1, 1)
    assert await harness.checkpoint() == 0
    assert await harness.next_bundle_id() == 1
    assert await harness.row_state("docs", '{"id":"d1"}') is None

    # Once the server serves the right hash the same outbox replays; nothing is re-uploaded.
    from .conftest import hash_rows

    harness.server.by_seq[1].hash = hash_rows(harness.server.by_seq[1].rows)
    assert (await push_pending(await harness.runtime())).outcome is PushOutcome.COMMITTED
    assert len(harness.server.named("chunk")) == 1
    await _assert_replayed_once(harness)


async def test_already_committed_proof_rejects_foreign_rows(harness: Harness) -> None:
    await _one_doc(harness)
    await push_pending(await harness.runtime(retry=NO_RETRY))  # commits bundle 1 for source
    await harness.sql("INSERT INTO docs VALUES ('d2', 'mine')")
    # The server claims (1, 2) is committed, but with rows that are not ours.
    harness.server.bundles[(SOURCE, 2)] = harness.server.by_seq[1]
    done = harness.server.by_seq[1]
    harness.server.push_script("create", httpx.Response(200, json={
        "status": "already_committed", **commit_body(done), "source_bundle_id": 2,
    }))
    harness.server.push_script("rows", httpx.Response(200, json={
        **commit_body(done), "source_bundle_id": 2, "rows": done.rows,
        "next_row_ordinal": 0, "has_more": False,
    }))
    # The foreign rows prove a clone: the outbox moves, unchanged, to a fresh source (the
    # scripted 503 stops the push right there, so the move itself can be inspected).
    harness.server.push_script("create", httpx.Response(503))
    runtime = await harness.runtime(retry=NO_RETRY)
    with pytest.raises(RetryExhaustedError):
        await push_pending(runtime)
    assert runtime.source_id != SOURCE
    assert await harness.outbox_state() == ("prepared", 1, 1, 0)
    assert await harness.value("SELECT source_id FROM _sync_outbox_bundle") == runtime.source_id
    assert await harness.value(
        "SELECT replaced_by_source_id FROM _sync_source_state WHERE source_id = ?", (SOURCE,)
    ) == runtime.source_id
    assert await harness.rows("SELECT body FROM docs WHERE id = 'd2'") == [("mine",)]
    assert await harness.row_state("docs", '{"id":"d2"}') is None
    assert await harness.checkpoint() == 1


@pytest.mark.parametrize(
    ("name", "reply", "match"),
    [
        ("create", {"push_id": "", "status": "staging", "planned_row_count": 1,
                    "next_expected_row_ordinal": 0}, "staging"),
        ("create", {"push_id": "p", "status": "staging", "planned_row_count": 1,
                    "next_expected_row_ordinal": 1}, "staging"),
        ("create", {"status": "already_committed", "bundle_seq": 1, "source_id": "other",
                    "source_bundle_id": 1, "row_count": 1, "bundle_hash": "x"}, "source_id"),
        ("chunk", {"push_id": "push-1", "next_expected_row_ordinal": 7}, "chunk at 0"),
        ("commit", {"bundle_seq": 1, "source_id": SOURCE, "source_bundle_id": 1,
                    "row_count": 1, "bundle_hash": ""}, "bundle_hash"),
        ("rows", {"bundle_seq": 1, "source_id": SOURCE, "source_bundle_id": 1, "row_count": 1,
                  "bundle_hash": "h", "rows": [], "next_row_ordinal": -1, "has_more": False},
         "bundle_hash"),
        ("create", {"status": "bogus"}, "PushSessionCreateResponse"),
    ],
)
async def test_malformed_replies_fail_closed(
    harness: Harness, name: str, reply: dict[str, object], match: str
) -> None:
    await _one_doc(harness)
    harness.server.push_script(name, httpx.Response(200, json=reply))
    with pytest.raises(ProtocolViolationError, match=match):
        await push_pending(await harness.runtime())
    assert (await harness.outbox_state())[0] in ("prepared", "committed_remote")
    assert await harness.checkpoint() == 0
    assert await harness.row_state("docs", '{"id":"d1"}') is None
    # The outbox is replayable: with an honest server the next push finishes the job.
    assert (await push_pending(await harness.runtime())).outcome is PushOutcome.COMMITTED
    assert await harness.row_state("docs", '{"id":"d1"}') is not None


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("name", "code", "extras"),
    [
        ("create", "source_sequence_out_of_order", {}),
        ("create", "history_pruned", {}),
        ("create", "source_retired",
         {"source_id": SOURCE, "replaced_by_source_id": "22222222-2222-4222-8222-222222222222"}),
        ("commit", "source_sequence_changed", {}),
        ("commit", "source_retired", {"source_id": SOURCE}),
    ],
)
async def test_source_rejections_enter_recovery(
    harness: Harness, name: str, code: str, extras: dict[str, str]
) -> None:
    await _one_doc(harness)
    harness.server.push_script(name, error(409, code, "rejected", **extras))
    runtime = await harness.runtime()
    with pytest.raises(SourceRecoveryRequiredError) as caught:
        await push_pending(runtime)
    assert caught.value.code == code
    kind, reason, replacement = (await harness.rows(
        "SELECT kind, reason, replacement_source_id FROM _sync_operation_state"
    ))[0]
    assert (kind, reason) == ("source_recovery", code)
    if extras.get("replaced_by_source_id"):
        assert replacement == extras["replaced_by_source_id"]
    assert replacement
    assert replacement != SOURCE
    assert await harness.value("SELECT COUNT(*) FROM _sync_source_state WHERE source_id = ?",
                               (replacement,)) == 1
    assert await harness.value("SELECT rebuild_required FROM _sync_attachment_state") == 1
    assert (await harness.outbox_state())[0] == "prepared"
    if name == "commit":
        assert harness.server.deleted_sessions == ["push-1"]
    # Persisted: the next push fails the same way without touching the network.
    before = len(harness.server.requests)
    with pytest.raises(SourceRecoveryRequiredError):
        await push_pending(runtime)
    assert len(harness.server.requests) == before


async def test_diverged_replacement_records_nothing(harness: Harness) -> None:
    await _one_doc(harness)
    await harness.sql(
        "UPDATE _sync_operation_state SET replacement_source_id = 'reserved-local'"
    )
    harness.server.push_script("create", error(
        409, "source_retired", source_id=SOURCE, replaced_by_source_id="server-choice",
    ))
    with pytest.raises(SourceReplacementDivergedError):
        await push_pending(await harness.runtime())
    assert await harness.rows("SELECT kind FROM _sync_operation_state") == [("none",)]
    assert await harness.value("SELECT rebuild_required FROM _sync_attachment_state") == 0


async def test_committed_remote_source_rejection_takes_pruned_path(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§12.31: on committed_remote a source rejection means "rebuild", not a wedge."""
    calls: list[int] = []

    async def fake_rebuild(runtime: ClientRuntime, source_bundle_id: int) -> RestoreSummary:
        calls.append(source_bundle_id)
        return RestoreSummary(5, 0)

    monkeypatch.setattr(push_module.snapshot, "rebuild_after_pruned_replay", fake_rebuild)
    await _one_doc(harness)
    runtime = await harness.runtime()

    async def crash(_: AsyncConnection | None) -> None:
        raise RuntimeError("crash")

    runtime.hooks.before_push_replay = crash
    with pytest.raises(RuntimeError):
        await push_pending(runtime)
    harness.server.push_script("create", error(409, "source_retired", source_id=SOURCE))
    assert (await push_pending(runtime)).outcome is PushOutcome.COMMITTED
    assert calls == [1]
    assert await harness.rows("SELECT kind FROM _sync_operation_state") == [("none",)]


async def test_history_pruned_on_committed_fetch_rebuilds(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    async def fake_rebuild(runtime: ClientRuntime, source_bundle_id: int) -> RestoreSummary:
        calls.append(source_bundle_id)
        return RestoreSummary(5, 1)

    monkeypatch.setattr(push_module.snapshot, "rebuild_after_pruned_replay", fake_rebuild)
    await _one_doc(harness)
    harness.server.push_script("rows", error(409, "history_pruned"))
    assert (await push_pending(await harness.runtime())).outcome is PushOutcome.COMMITTED
    assert calls == [1]
    assert len(harness.server.named("rows")) == 1  # history_pruned is never retried


async def test_initialization_lease_loss_disconnects_and_requeues_the_seed(
    harness: Harness,
) -> None:
    await _one_doc(harness)
    await harness.sql("UPDATE _sync_attachment_state SET pending_initialization_id = 'init-1'")
    runtime = await harness.runtime()
    user = runtime.user_id
    runtime.pending_initialization_id = "init-1"
    harness.server.push_script("create", error(410, "initialization_expired"))
    with pytest.raises(InitializationExpiredError):
        await push_pending(runtime)
    (create,) = harness.server.bodies("create")
    assert create["initialization_id"] == "init-1"
    # Anonymous and disconnected as in Go, but the lease's user is remembered (CLIENT.md
    # §12.29): the unsent seed may only go to that user.
    assert await harness.rows(
        "SELECT binding_state, attached_user_id, pending_initialization_id"
        " FROM _sync_attachment_state"
    ) == [("anonymous", user, "")]
    assert not runtime.session_connected
    assert runtime.user_id == ""
    # The never-committed seed is an ordinary pending change again, not a frozen outbox.
    assert await harness.outbox_state() == ("none", 0, 0, 0)
    assert await harness.dirty() == [
        ("docs", '{"id":"d1"}', "INSERT", 0, '{"id":"d1","body":"hello"}')
    ]
    with pytest.raises(AttachRequiredError):
        await push_pending(runtime)


async def test_initialization_id_is_cleared_by_the_commit(harness: Harness) -> None:
    await _one_doc(harness)
    await harness.sql("UPDATE _sync_attachment_state SET pending_initialization_id = 'init-1'")
    runtime = await harness.runtime()
    runtime.pending_initialization_id = "init-1"
    await push_pending(runtime)
    assert runtime.pending_initialization_id == ""
    assert await harness.value("SELECT pending_initialization_id FROM _sync_attachment_state") == ""


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (error(500, "push_session_create_failed"), PushSessionCreateFailedError),
        (error(409, "scope_uninitialized"), ScopeUninitializedError),
        (httpx.Response(418, text="teapot"), UnexpectedStatusError),
    ],
)
async def test_other_errors_keep_the_outbox(
    harness: Harness, reply: httpx.Response, expected: type[Exception]
) -> None:
    await _one_doc(harness)
    harness.server.push_script("create", reply)
    with pytest.raises(expected):
        await push_pending(await harness.runtime())
    assert len(harness.server.named("create")) == 1  # not retryable
    assert (await harness.outbox_state())[0] == "prepared"
    assert await harness.dirty() == []
    assert (await push_pending(await harness.runtime())).outcome is PushOutcome.COMMITTED


async def test_retryable_status_is_retried_then_exhausted(harness: Harness) -> None:
    await _one_doc(harness)
    harness.server.push_script("create", *[error(503, "service_unavailable")] * 3)
    with pytest.raises(RetryExhaustedError) as caught:
        await push_pending(await harness.runtime())
    assert (caught.value.operation, caught.value.attempts) == ("push_pending", 3)
    assert (await harness.outbox_state())[0] == "prepared"


async def test_chunk_failure_deletes_the_session(harness: Harness) -> None:
    await _one_doc(harness)
    harness.server.push_script("chunk", error(409, "push_chunk_out_of_order"))
    with pytest.raises(PushChunkOutOfOrderError):
        await push_pending(await harness.runtime())
    assert harness.server.deleted_sessions == ["push-1"]


# --------------------------------------------------------------------------- preconditions


async def test_preconditions_touch_no_network(harness: Harness) -> None:
    await _one_doc(harness)
    runtime = await harness.runtime()
    runtime.session_connected = False
    with pytest.raises(AttachRequiredError):
        await push_pending(runtime)
    runtime.session_connected = True
    await harness.sql("UPDATE _sync_attachment_state SET rebuild_required = 1")
    with pytest.raises(RebuildRequiredError):
        await push_pending(runtime)
    await harness.sql("UPDATE _sync_attachment_state SET rebuild_required = 0")
    runtime.uploads_paused = True
    assert (await push_pending(runtime)).outcome is PushOutcome.SKIPPED_PAUSED
    assert harness.server.requests == []
    assert len(await harness.dirty()) == 1
