"""Push behaviours pinned by go-oversync's ``oversqlite/push_test.go`` that had no counterpart here.

Each test names the Go test it ports in its docstring; the full mapping, including the Go tests
already covered elsewhere, is ``docs/go-test-parity-part1.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client import (
    RetryPolicy,
    SyncOperationInProgressError,
    SyncTable,
)
from oversync_sa.client.errors import (
    KeyEncodingError,
    PayloadEncodingError,
    ProtocolViolationError,
    RetryExhaustedError,
    SourceRecoveryRequiredError,
)
from oversync_sa.client.outbox import freeze_outbox
from oversync_sa.client.push import PushTransferStats, push_pending
from oversync_sa.client.results import PushOutcome
from oversync_sa.errors import AuthenticationFailedError
from tests.client.facade.server import (
    SyncServer,
    attached,
    execute,
    make_client as make_facade_client,
)
from tests.client.lifecycle.fakes import (
    FakeServer as LifecycleServer,
    attached as lifecycle_attached,
    closing,
    make_client as make_lifecycle_client,
    scalar as lifecycle_scalar,
    snapshot_routes,
)
from tests.client.push.conftest import (
    SOURCE,
    FakeServer,
    Harness,
    commit_body,
    error,
    harness as harness,  # a fixture
    hash_rows,
    open_harness,
)

NO_RETRY = RetryPolicy(enabled=False)
COMMITTED_VERSION = 11


def committing_with(
    server: FakeServer, rewrite: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> None:
    """Make ``server`` commit ``rewrite(rows)`` instead of the uploaded rows (hash recomputed),
    as a server whose triggers or normalisation change what it stores."""
    original = server.commit_session

    def commit(push_id: str):  # type: ignore[no-untyped-def]
        done = original(push_id)
        done.rows = rewrite(done.rows)
        done.hash = hash_rows(done.rows)
        return done

    server.commit_session = commit  # type: ignore[method-assign]


def chunk_rows(server: FakeServer) -> list[dict[str, Any]]:
    return [row for chunk in server.bodies("chunk") for row in chunk["rows"]]


async def count(harness: Harness, table: str) -> int:
    return int(await harness.value(f"SELECT COUNT(*) FROM {table}"))


# --------------------------------------------------------------------------- freeze (§5.1)


async def test_repeated_edits_push_one_insert_and_advance_bundle_state(harness: Harness) -> None:
    """TestPushPending_RepeatedLocalEditsCollapseIntoOneDirtyRowAndAdvanceBundleState and
    TestPushPending_SuccessfulCommitDoesNotDeleteCommittedSession."""
    await harness.sql("INSERT INTO docs VALUES ('d1', 'first')")
    await harness.sql("UPDATE docs SET body = 'second' WHERE id = 'd1'")
    assert await harness.dirty() == [
        ("docs", '{"id":"d1"}', "INSERT", 0, '{"id":"d1","body":"second"}')
    ]

    report = await push_pending(await harness.runtime())

    assert report.outcome is PushOutcome.COMMITTED
    ((row,),) = [c["rows"] for c in harness.server.bodies("chunk")]
    assert (row["op"], row["payload"]) == ("INSERT", {"id": "d1", "body": "second"})
    assert await harness.dirty() == []
    assert await harness.row_state("docs", '{"id":"d1"}') == (1, 0)
    assert await harness.next_bundle_id() == 2
    assert await harness.checkpoint() == 1
    # A committed session belongs to the server now; deleting it would be a protocol error.
    assert harness.server.deleted_sessions == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        # TestCollectDirtyRowsForPushInTx_LocalInsertBuildsInsertFromDirtyPayload
        (["INSERT INTO docs VALUES ('k', 'Local')"],
         ("INSERT", 0, '{"id":"k","body":"Local"}', {"id": "k", "body": "Local"})),
        # TestCollectDirtyRowsForPushInTx_SyncedUpdateBuildsUpdateFromDirtyPayload
        (["synced 41", "UPDATE docs SET body = 'After' WHERE id = 'k'"],
         ("UPDATE", 41, '{"id":"k","body":"After"}', {"id": "k", "body": "After"})),
        # TestCollectDirtyRowsForPushInTx_SyncedDeleteBuildsDeleteWithoutPayload
        (["synced 12", "DELETE FROM docs WHERE id = 'k'"], ("DELETE", 12, None, None)),
    ],
    ids=["local-insert", "synced-update", "synced-delete"],
)
async def test_freeze_derives_op_base_and_payload(
    harness: Harness, setup: list[str], expected: tuple[Any, ...]
) -> None:
    """The four TestCollectDirtyRowsForPushInTx_* tests (the no-op case is below)."""
    for step in setup:
        if step.startswith("synced "):
            await harness.synced("docs", "k", "'k', 'Before'", int(step.split()[1]))
        else:
            await harness.sql(step)
    runtime = await harness.runtime()
    async with harness.engine.begin() as conn:
        bundle = await freeze_outbox(conn, runtime.managed, source_id=SOURCE,
                                     initialization_id="")
    assert bundle is not None
    assert bundle.source_bundle_id == 1
    (row,) = bundle.rows
    op, base, local, wire = expected
    assert (row.op.value, row.base_row_version, row.local_payload, row.key_json) == (
        op, base, local, '{"id":"k"}',
    )
    assert (None if row.wire_payload is None else msgspec.json.decode(row.wire_payload)) == wire
    assert await harness.dirty() == []
    assert await count(harness, "_sync_outbox_rows") == 1


async def test_freeze_drops_an_unsynced_insert_then_delete(harness: Harness) -> None:
    """TestCollectDirtyRowsForPushInTx_UnsyncedInsertDeleteBecomesNoOp (and, unlike Go, the
    no-op cleanup is committed - CLIENT.md §12.24)."""
    await harness.sql("INSERT INTO docs VALUES ('gone', 'Temp')")
    await harness.sql("DELETE FROM docs WHERE id = 'gone'")
    runtime = await harness.runtime()
    async with harness.engine.begin() as conn:
        bundle = await freeze_outbox(conn, runtime.managed, source_id=SOURCE,
                                     initialization_id="")
    assert bundle is None
    assert await harness.dirty() == []
    assert await count(harness, "_sync_outbox_rows") == 0
    assert await harness.next_bundle_id() == 1


async def test_only_one_frozen_bundle_is_kept_across_attempts(harness: Harness) -> None:
    """TestPushPending_KeepsOnlyOneFrozenOutboxBundleDurably: a failed push does not freeze a
    second bundle; later writes wait in the dirty rows."""
    await harness.sql("INSERT INTO docs VALUES ('a', 'x')")
    await harness.sql("INSERT INTO docs VALUES ('b', 'x')")
    harness.server.push_script("create", error(503, "service_unavailable"),
                               error(503, "service_unavailable"))
    with pytest.raises(RetryExhaustedError):
        await push_pending(await harness.runtime(retry=NO_RETRY))
    await harness.sql("INSERT INTO docs VALUES ('c', 'later')")
    with pytest.raises(RetryExhaustedError):
        await push_pending(await harness.runtime(retry=NO_RETRY))

    assert [b["source_bundle_id"] for b in harness.server.bodies("create")] == [1, 1]
    assert [b["planned_row_count"] for b in harness.server.bodies("create")] == [2, 2]
    assert await harness.outbox_state() == ("prepared", 1, 2, 0)
    assert await harness.rows(
        "SELECT DISTINCT source_bundle_id FROM _sync_outbox_rows"
    ) == [(1,)]
    assert [k for _, k, _, _, _ in await harness.dirty()] == ['{"id":"c"}']


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        # The value of TestPushPending_RealColumnReplayDoesNotRequeueEquivalentValue.
        (6.57111473696007, 6.57111473696007),
        # Needs 17 digits: Go pushes 0.3 and then requeues an extra UPDATE (CLIENT.md §12.38);
        # captured losslessly here, so the replay sees no difference either.
        (0.1 + 0.2, 0.30000000000000004),
    ],
    ids=["go-value", "needs-17-digits"],
)
async def test_real_column_replay_does_not_requeue(
    tmp_path: Path, value: float, stored: float
) -> None:
    """TestPushPending_RealColumnReplayDoesNotRequeueEquivalentValue."""
    ddl = ["CREATE TABLE scores (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
           " score REAL NOT NULL)"]
    async with open_harness(tmp_path / "custom.db", ddl, (SyncTable("scores", "id"),)) as h:
        await h.sql("INSERT INTO scores VALUES ('k', 'Bob', ?)", (value,))
        assert (await push_pending(await h.runtime())).outcome is PushOutcome.COMMITTED

        assert chunk_rows(h.server)[0]["payload"]["score"] == stored
        assert await h.dirty() == []
        assert await count(h, "_sync_outbox_rows") == 0
        assert await h.rows("SELECT score FROM scores") == [(stored,)]


# --------------------------------------------------------------------------- keys


async def test_text_sync_key_named_other_than_id(tmp_path: Path) -> None:
    """TestPushPending_TextSyncKeyRoundTripsThroughPush: the wire key, payload and row state
    use the configured key column."""
    ddl = ["CREATE TABLE notes (doc_id TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL)"]
    async with open_harness(tmp_path / "custom.db", ddl, (SyncTable("notes", "doc_id"),)) as h:
        await h.sql("INSERT INTO notes VALUES ('doc-1', 'Hello text key')")
        assert (await push_pending(await h.runtime())).outcome is PushOutcome.COMMITTED

        (row,) = chunk_rows(h.server)
        assert row["key"] == {"doc_id": "doc-1"}
        assert row["payload"] == {"doc_id": "doc-1", "body": "Hello text key"}
        assert await h.row_state("notes", '{"doc_id":"doc-1"}') == (1, 0)


async def test_non_uuid_blob_key_is_refused_before_any_request(harness: Harness) -> None:
    """TestPushPending_RejectsNonUUIDBlobSyncKey: a 2-byte BLOB key cannot be a wire UUID."""
    await harness.sql("INSERT INTO files VALUES (x'0102', 'f', NULL)")
    with pytest.raises(KeyEncodingError, match="invalid blob UUID pk"):
        await push_pending(await harness.runtime())
    assert harness.server.requests == []
    # The freeze rolled back: the write is still pending, nothing is half-frozen.
    assert [(t, op) for t, _, op, _, _ in await harness.dirty()] == [("files", "INSERT")]
    assert await harness.outbox_state() == ("none", 0, 0, 0)


# --------------------------------------------------------------------------- transport


async def test_transient_create_failure_is_retried_within_the_push(harness: Harness) -> None:
    """TestPushPending_RetriesTransientCreateSessionFailureAndSucceeds."""
    await harness.sql("INSERT INTO docs VALUES ('d1', 'x')")
    harness.server.next_seq = 10
    harness.server.push_script("create", error(503, "temporarily_unavailable", "retry me"))

    report = await push_pending(await harness.runtime())

    assert report.outcome is PushOutcome.COMMITTED
    assert [b["source_bundle_id"] for b in harness.server.bodies("create")] == [1, 1]
    assert await harness.row_state("docs", '{"id":"d1"}') == (10, 0)
    assert await harness.next_bundle_id() == 2


async def test_unauthorized_create_is_not_retried(harness: Harness) -> None:
    """TestPushPending_DoesNotRetryUnauthorized."""
    await harness.sql("INSERT INTO docs VALUES ('d1', 'x')")
    harness.server.push_script(
        "create", *[error(401, "authentication_failed", "bad token")] * 3
    )
    with pytest.raises(AuthenticationFailedError):
        await push_pending(await harness.runtime())
    assert len(harness.server.named("create")) == 1
    assert (await harness.outbox_state())[0] == "prepared"


# --------------------------------------------------------------------------- rejections


async def test_commit_source_retired_adopts_the_servers_replacement(harness: Harness) -> None:
    """TestPushPending_CommitSourceRetiredEntersSourceRecoveryAndAdoptsReplacement."""
    await harness.sql("INSERT INTO docs VALUES ('d1', 'x')")
    replacement = "33333333-3333-4333-8333-333333333333"
    harness.server.push_script("commit", error(
        409, "source_retired", "retired", source_id=SOURCE, replaced_by_source_id=replacement,
    ))
    with pytest.raises(SourceRecoveryRequiredError) as caught:
        await push_pending(await harness.runtime())
    assert caught.value.code == "source_retired"
    assert await harness.rows(
        "SELECT kind, reason, replacement_source_id FROM _sync_operation_state"
    ) == [("source_recovery", "source_retired", replacement)]
    assert await harness.outbox_state() == ("prepared", 1, 1, 0)
    assert harness.server.deleted_sessions == ["push-1"]


def _commit_reply_with(
    server: FakeServer, **changes: Any
) -> Callable[[httpx.Request], httpx.Response]:
    def reply(request: httpx.Request) -> httpx.Response:
        # Stored honestly, answered with corrupted metadata.
        done = server.commit_session(request.url.path.split("/")[3])
        return httpx.Response(200, json={**commit_body(done), **changes})

    return reply


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"row_count": 2}, "row_count"),
        ({"bundle_hash": "0" * 64}, "bundle_hash"),
    ],
    ids=["row-count", "bundle-hash"],
)
async def test_commit_reply_metadata_mismatch_fails_closed(
    harness: Harness, changes: dict[str, Any], match: str
) -> None:
    """TestPushPending_FailsClosedOnCommittedReplayMetadataMismatch: nothing is replayed, the
    outbox survives; the next push recovers the truth through ``already_committed``."""
    await harness.sql("INSERT INTO docs VALUES ('d1', 'x')")
    harness.server.push_script("commit", _commit_reply_with(harness.server, **changes))

    # The fetched pages carry the true metadata, so the mismatch is caught before staging.
    with pytest.raises(ProtocolViolationError, match=match):
        await push_pending(await harness.runtime())

    assert await harness.dirty() == []
    assert await count(harness, "_sync_outbox_rows") == 1
    assert await count(harness, "_sync_push_stage") == 0
    assert await harness.row_state("docs", '{"id":"d1"}') is None
    assert await harness.next_bundle_id() == 1
    assert await harness.checkpoint() == 0
    assert (await push_pending(await harness.runtime())).outcome is PushOutcome.COMMITTED
    assert len(harness.server.named("chunk")) == 1
    assert await harness.row_state("docs", '{"id":"d1"}') == (1, 0)


# --------------------------------------------------------------------------- concurrent writes


async def test_new_key_written_during_upload_stays_dirty(harness: Harness) -> None:
    """TestPushPending_NewLocalWritesDuringUploadSurviveInDirtyRows."""
    await harness.sql("INSERT INTO docs VALUES ('orig', 'Ada')")
    runtime = await harness.runtime()

    async def write_then_crash(_: AsyncConnection | None) -> None:
        await harness.sql("INSERT INTO docs VALUES ('new', 'Grace')")
        raise RuntimeError("simulated crash before commit")

    runtime.hooks.before_push_commit = write_then_crash
    with pytest.raises(RuntimeError, match="simulated crash"):
        await push_pending(runtime)

    assert [(k, op) for _, k, op, _, _ in await harness.dirty()] == [('{"id":"new"}', "INSERT")]
    assert await harness.rows("SELECT key_json FROM _sync_outbox_rows") == [('{"id":"orig"}',)]


async def test_new_key_written_before_replay_stays_dirty(harness: Harness) -> None:
    """TestPushPending_NewLocalWritesDuringReplaySurviveInDirtyRows."""
    await harness.sql("INSERT INTO docs VALUES ('orig', 'Ada')")
    runtime = await harness.runtime()
    runtime.hooks.before_push_replay = harness.writes_hook(
        "INSERT INTO docs VALUES ('new', 'Grace')"
    )
    assert (await push_pending(runtime)).outcome is PushOutcome.COMMITTED

    assert [(k, op) for _, k, op, _, _ in await harness.dirty()] == [('{"id":"new"}', "INSERT")]
    assert await count(harness, "_sync_outbox_rows") == 0
    assert await count(harness, "_sync_push_stage") == 0
    assert await harness.row_state("docs", '{"id":"orig"}') == (1, 0)
    assert await harness.row_state("docs", '{"id":"new"}') is None


Mutation = tuple[str, ...]


@pytest.mark.parametrize(
    ("seed", "first", "during", "upload", "live", "state", "dirty"),
    [
        # update to later delete
        (True, ("UPDATE docs SET body = 'First' WHERE id = 'k'",),
         ("DELETE FROM docs WHERE id = 'k'",),
         ("UPDATE", "First"), None, (COMMITTED_VERSION, 0), ("DELETE", None)),
        # insert to later update before replay
        (False, ("INSERT INTO docs VALUES ('k', 'First')",),
         ("UPDATE docs SET body = 'Second' WHERE id = 'k'",),
         ("INSERT", "First"), "Second", (COMMITTED_VERSION, 0), ("UPDATE", "Second")),
    ],
    ids=["update-then-delete", "insert-then-update"],
)
async def test_same_key_edit_during_upload_is_rebased(
    harness: Harness, seed: bool, first: Mutation, during: Mutation,
    upload: tuple[str, str], live: str | None, state: tuple[int, int],
    dirty: tuple[str, str | None],
) -> None:
    """TestPushPending_RebasesSameKeyLocalIntentDuringAuthoritativeReplay and
    TestPushPending_RebasesSameKeyLocalIntentMutatedDuringUpload: the cases that
    ``push/test_push_recovery.py::test_rebase_of_edits_made_during_upload`` does not cover.
    The newer intent survives, re-based on the committed version."""
    await _rebase_setup(harness, seed, first)
    runtime = await harness.runtime()
    runtime.hooks.before_push_commit = harness.writes_hook(*during)

    assert (await push_pending(runtime)).outcome is PushOutcome.COMMITTED

    await _assert_rebased(harness, upload, live, state, dirty)


@pytest.mark.parametrize(
    ("first", "during", "upload", "live", "state", "dirty"),
    [
        ("UPDATE docs SET body = 'First' WHERE id = 'k'",
         "UPDATE docs SET body = 'Second' WHERE id = 'k'",
         ("UPDATE", "First"), "Second", (COMMITTED_VERSION, 0), ("UPDATE", "Second")),
        ("UPDATE docs SET body = 'First' WHERE id = 'k'", "DELETE FROM docs WHERE id = 'k'",
         ("UPDATE", "First"), None, (COMMITTED_VERSION, 0), ("DELETE", None)),
        ("DELETE FROM docs WHERE id = 'k'", "INSERT INTO docs VALUES ('k', 'Recreated')",
         ("DELETE", None), "Recreated", (COMMITTED_VERSION, 1), ("INSERT", "Recreated")),
    ],
    ids=["edit", "delete", "reinsert"],
)
async def test_same_key_edit_during_upload_is_rebased_after_restart(
    harness: Harness, first: str, during: str, upload: tuple[str, str | None],
    live: str | None, state: tuple[int, int], dirty: tuple[str, str | None],
) -> None:
    """TestPushPending_RebasesSameKeyLocalIntentAfterRestartBeforeReplay: the crash comes
    between commit and replay; the restarted client only fetches and replays."""
    await _rebase_setup(harness, True, (first,))
    runtime = await harness.runtime()
    runtime.hooks.before_push_commit = harness.writes_hook(during)

    async def crash(_: AsyncConnection | None) -> None:
        raise RuntimeError("simulated crash before replay")

    runtime.hooks.before_push_replay = crash
    with pytest.raises(RuntimeError, match="before replay"):
        await push_pending(runtime)

    stats = PushTransferStats()
    restarted = await harness.runtime()
    assert (await push_pending(restarted, stats=stats)).outcome is PushOutcome.COMMITTED
    assert (stats.sessions_created, stats.chunks_uploaded, stats.committed_bundle_chunks_read) == (
        0, 0, 1,
    )
    await _assert_rebased(harness, upload, live, state, dirty)


async def _rebase_setup(harness: Harness, seed: bool, first: Mutation) -> None:
    if seed:
        await harness.synced("docs", "k", "'k', 'Original'", 7)
    for statement in first:
        await harness.sql(statement)
    harness.server.next_seq = COMMITTED_VERSION


async def _assert_rebased(
    harness: Harness, upload: tuple[str, str | None], live: str | None,
    state: tuple[int, int], dirty: tuple[str, str | None],
) -> None:
    (sent,) = chunk_rows(harness.server)
    op, body = upload
    assert sent["op"] == op
    assert (sent.get("payload") or {}).get("body") == body
    assert await harness.rows("SELECT body FROM docs WHERE id = 'k'") == (
        [] if live is None else [(live,)]
    )
    assert await harness.row_state("docs", '{"id":"k"}') == state
    dirty_op, dirty_body = dirty
    expected_payload = None if dirty_body is None else f'{{"id":"k","body":"{dirty_body}"}}'
    assert await harness.dirty() == [
        ("docs", '{"id":"k"}', dirty_op, COMMITTED_VERSION, expected_payload)
    ]
    assert await harness.value("SELECT apply_mode FROM _sync_apply_state") == 0


# --------------------------------------------------------------------------- replay (§5.5)


async def test_failed_replay_rolls_back_and_does_not_leak_apply_mode(harness: Harness) -> None:
    """TestPushPending_AuthoritativeReplayRollbackDoesNotLeakApplyMode: the server commits a
    payload missing a local column; the replay fails as a whole."""
    await harness.sql("INSERT INTO docs VALUES ('d1', 'x')")
    await harness.sql("INSERT INTO authors VALUES ('a1', 'Ann')")

    def drop_author_name(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if row["table"] == "authors":
                row["payload"] = {"id": row["payload"]["id"]}
        return rows

    committing_with(harness.server, drop_author_name)
    with pytest.raises(PayloadEncodingError, match="authors"):
        await push_pending(await harness.runtime())

    assert await harness.value("SELECT apply_mode FROM _sync_apply_state") == 0
    assert await harness.dirty() == []
    assert (await harness.outbox_state())[0] == "committed_remote"
    assert await count(harness, "_sync_outbox_rows") == 2
    assert await count(harness, "_sync_push_stage") == 2
    assert await count(harness, "_sync_row_state") == 0  # d1's replay rolled back too
    assert await harness.checkpoint() == 0
    assert await harness.next_bundle_id() == 1
    # Capture still works: the failed replay did not leave apply mode on.
    await harness.sql("UPDATE docs SET body = 'y' WHERE id = 'd1'")
    assert len(await harness.dirty()) == 1


TEAMS_DDL = (
    "CREATE TABLE teams (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
    " captain_member_id TEXT REFERENCES team_members(id) DEFERRABLE INITIALLY IMMEDIATE)",
    "CREATE TABLE team_members (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
    " team_id TEXT NOT NULL REFERENCES teams(id) DEFERRABLE INITIALLY IMMEDIATE)",
    "CREATE TABLE categories (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
    " parent_id TEXT REFERENCES categories(id) DEFERRABLE INITIALLY IMMEDIATE)",
)


async def test_replay_defers_cyclic_and_self_referencing_foreign_keys(tmp_path: Path) -> None:
    """TestPushPending_AuthoritativeReplayRunsWithDeferredForeignKeys (both subtests; the
    plain child-before-parent case is ``test_go_parity_replay.py``): the committed bundle lists
    rows in an order no immediate FK check would accept."""
    tables = (SyncTable("teams", "id"), SyncTable("team_members", "id"),
              SyncTable("categories", "id"))
    async with open_harness(tmp_path / "custom.db", TEAMS_DDL, tables) as h:
        async with h.engine.begin() as conn:
            await conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
            await conn.exec_driver_sql("INSERT INTO teams VALUES ('t1', 'Core', 'm1')")
            await conn.exec_driver_sql("INSERT INTO team_members VALUES ('m1', 'Ada', 't1')")
        await h.sql("INSERT INTO categories VALUES ('parent', 'Parent', NULL)")
        await h.sql("INSERT INTO categories VALUES ('child', 'Child', 'parent')")

        def children_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            order = {"child": 0, "parent": 1, "t1": 2, "m1": 3}
            return sorted(rows, key=lambda r: order[r["key"]["id"]])

        committing_with(h.server, children_first)
        assert (await push_pending(await h.runtime())).outcome is PushOutcome.COMMITTED

        assert await h.rows("SELECT parent_id FROM categories WHERE id = 'child'") == [
            ("parent",)
        ]
        assert await h.rows("SELECT captain_member_id FROM teams") == [("m1",)]
        assert await h.rows("SELECT team_id FROM team_members") == [("t1",)]
        assert await count(h, "_sync_row_state") == 4
        assert await h.dirty() == []


# --------------------------------------------------------------------------- client lock


async def test_overlapping_operations_are_refused(tmp_path: Path) -> None:
    """TestClient_RejectsOverlappingSyncOperations: while a push waits before its commit, every
    other sync operation fails at once instead of queueing (CLIENT.md §12.21)."""
    server = SyncServer()
    async with closing(await make_facade_client(tmp_path / "lock.db", server)) as client:
        await attached(client)
        await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
        entered, release = asyncio.Event(), asyncio.Event()

        async def hold(_: AsyncConnection | None) -> None:
            entered.set()
            await release.wait()

        client.runtime.hooks.before_push_commit = hold
        first = asyncio.create_task(client.push_pending())
        await asyncio.wait_for(entered.wait(), 5)
        before = len(server.requests)

        for operation in (client.push_pending, client.pull_to_stable, client.rebuild,
                          client.sync):
            with pytest.raises(SyncOperationInProgressError):
                await operation()

        assert len(server.requests) == before
        release.set()
        assert (await asyncio.wait_for(first, 5)).outcome is PushOutcome.COMMITTED
        assert [r["key"]["id"] for r in server.pushed_rows()] == ["a"]


# --------------------------------------------------------------------------- source recovery


async def test_source_recovery_survives_a_restart_until_the_rotated_rebuild(
    tmp_path: Path,
) -> None:
    """TestPushPending_CreateSourceSequenceOutOfOrderPersistsSourceRecoveryAcrossRestart: after
    a restart every sync operation still fails closed without a request; the rotated rebuild
    asks for the reserved replacement and keeps the outbox for the new source."""
    server = LifecycleServer()
    path = tmp_path / "restart.db"
    async with closing(await make_lifecycle_client(path, server)) as client:
        await lifecycle_attached(client, server)
        old = client.runtime.source_id
        async with client.runtime.engine.begin() as conn:
            await conn.exec_driver_sql("INSERT INTO users VALUES ('a', 'Ann')")
        server.queue("POST /api/sync/push-sessions", error(
            409, "source_sequence_out_of_order", "expected source_bundle_id 2"))
        with pytest.raises(SourceRecoveryRequiredError):
            await client.push_pending()
        reserved = await lifecycle_scalar(
            client, "SELECT replacement_source_id FROM _sync_operation_state")

    async with closing(await make_lifecycle_client(path, server)) as client:
        await client.open()
        await client.attach("u1")
        before = len(server.requests)
        for operation in (client.push_pending, client.pull_to_stable, client.sync):
            with pytest.raises(SourceRecoveryRequiredError) as caught:
                await operation()
            assert caught.value.code == "source_sequence_out_of_order"
        assert len(server.requests) == before
        snapshot_routes(server, [], seq=4)

        await client.rebuild()

        (create,) = [r for r in server.requests if r.url.path == "/api/sync/snapshot-sessions"]
        assert msgspec.json.decode(create.content) == {"source_replacement": {
            "previous_source_id": old, "new_source_id": reserved,
            "reason": "source_sequence_out_of_order",
        }}
        assert create.headers["oversync-source-id"] == old
        assert client.runtime.source_id == reserved
        assert await lifecycle_scalar(client, "SELECT kind FROM _sync_operation_state") == "none"
        assert await lifecycle_scalar(
            client, "SELECT state || ':' || source_id || ':' || source_bundle_id"
                    " FROM _sync_outbox_bundle") == f"prepared:{reserved}:1"
        assert await lifecycle_scalar(client, "SELECT group_concat(id) FROM users") == "a"
