"""Conflict behaviours pinned by go-oversync's ``oversqlite/conflict_parity_test.go`` that had no
counterpart in ``push/test_conflicts.py`` (Go test named in each docstring; full mapping in
``docs/go-test-parity-part1.md``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from oversync_sa.client import SyncTable
from oversync_sa.client.conflicts import (
    AcceptServer,
    ClientWinsResolver,
    ConflictContext,
    KeepLocal,
    KeepMerged,
    MergeResult,
    ServerWinsResolver,
)
from oversync_sa.client.errors import InvalidConflictResolutionError
from oversync_sa.client.push import push_pending
from oversync_sa.client.results import PushOutcome
from oversync_sa.client.runtime import ClientRuntime
from oversync_sa.wire import Op
from tests.client.push.conftest import (
    Harness,
    harness as harness,  # a fixture
    open_harness,
)
from tests.client.push.test_conflicts import Recording, conflict
from tests.client.test_go_parity_push import chunk_rows


async def rejected_while_editing(harness: Harness, *during: str) -> ClientRuntime:
    """``d1`` synced at version 1 and edited to 'Ada Local'; the runtime's upload makes the
    ``during`` writes before its commit, which a conflict on ``d1`` (server row 'Ada Server',
    version 2) rejects."""
    await harness.synced("docs", "d1", "'d1', 'Ada'", 1)
    await harness.sql("UPDATE docs SET body = 'Ada Local' WHERE id = 'd1'")
    runtime = await harness.runtime()
    runtime.hooks.before_push_commit = harness.writes_hook(*during)
    harness.server.push_script("commit", conflict(row={"id": "d1", "body": "Ada Server"}))
    return runtime


def test_built_in_resolvers() -> None:
    """TestBuiltInResolvers_ReturnExpectedResults."""
    empty = ConflictContext("business", "docs", {"id": "k"}, Op.UPDATE, None, 0, 0, False, None)
    assert ServerWinsResolver().resolve(empty) == AcceptServer()
    assert ClientWinsResolver().resolve(empty) == KeepLocal()


async def test_context_is_built_from_the_frozen_row(harness: Harness) -> None:
    """TestPushPending_StructuredConflictBuildsConflictContextFromOutboundSnapshot: every
    field the resolver sees, with the local payload taken from the outbox, not the live row."""
    runtime = await rejected_while_editing(
        harness, "UPDATE docs SET body = 'Edited later' WHERE id = 'd1'"
    )
    resolver = Recording(AcceptServer())

    await push_pending(runtime, resolver=resolver)

    (ctx,) = resolver.contexts
    assert ctx == ConflictContext(
        schema="business", table="docs", key={"id": "d1"}, local_op=Op.UPDATE,
        local_payload={"id": "d1", "body": "Ada Local"}, base_row_version=1,
        server_row_version=2, server_row_deleted=False,
        server_row={"id": "d1", "body": "Ada Server"},
    )


class LatestUpdatedAtWins:
    """The example resolver of the Go test: the newer ``updated_at`` wins as a merge."""

    def resolve(self, context: ConflictContext) -> MergeResult:
        local, server = context.local_payload, context.server_row
        if context.local_op is not Op.UPDATE or local is None or server is None:
            return AcceptServer()

        def stamp(payload: dict[str, Any]) -> datetime:
            return datetime.fromisoformat(payload["updated_at"])

        return KeepMerged(local if stamp(local) >= stamp(server) else server)


async def test_keep_merged_latest_updated_at_wins(tmp_path: Path) -> None:
    """TestPushPending_StructuredConflictKeepMergedLatestUpdatedAtWins."""
    ddl = ["CREATE TABLE people (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
           " email TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"]
    created = "2026-03-24T18:00:00Z"
    async with open_harness(tmp_path / "custom.db", ddl, (SyncTable("people", "id"),)) as h:
        await h.synced("people", "p1",
                       f"'p1', 'Ada', 'ada@example.com', '{created}', '{created}'", 1)
        await h.sql("UPDATE people SET name = 'Ada Local Newer', email = 'local@example.com',"
                    " updated_at = '2026-03-24T18:02:00Z' WHERE id = 'p1'")
        h.server.next_seq = 3
        h.server.push_script("commit", conflict("people", "p1", row={
            "id": "p1", "name": "Ada Server Older", "email": "server@example.com",
            "created_at": created, "updated_at": "2026-03-24T18:01:00Z",
        }))

        report = await push_pending(await h.runtime(), resolver=LatestUpdatedAtWins())

        assert report.outcome is PushOutcome.COMMITTED
        local = {"id": "p1", "name": "Ada Local Newer", "email": "local@example.com",
                 "created_at": created, "updated_at": "2026-03-24T18:02:00Z"}
        retried = chunk_rows(h.server)[-1]
        assert (retried["base_row_version"], retried["payload"]) == (2, local)
        assert await h.rows("SELECT name, email, updated_at FROM people") == [
            ("Ada Local Newer", "local@example.com", "2026-03-24T18:02:00Z")
        ]
        assert await h.row_state("people", '{"id":"p1"}') == (3, 0)


async def test_client_wins_retry_resends_the_conflict_row_and_its_siblings(
    harness: Harness,
) -> None:
    """TestPushPending_StructuredConflictPreservesSiblingRowsFromRejectedBundle (client wins;
    the server-wins variant is ``test_siblings_of_a_rejected_bundle_are_resent`` in
    ``push/test_conflicts.py``)."""
    await harness.synced("docs", "c", "'c', 'Grace'", 1)
    await harness.sql("UPDATE docs SET body = 'Grace Local' WHERE id = 'c'")
    await harness.sql("INSERT INTO docs VALUES ('s', 'Sibling')")
    harness.server.next_seq = 3
    harness.server.push_script("commit", conflict(key="c", row={"id": "c", "body": "Grace Server"}))

    report = await push_pending(await harness.runtime(), resolver=ClientWinsResolver())

    assert report.outcome is PushOutcome.COMMITTED
    first, second = harness.server.bodies("chunk")
    assert len(first["rows"]) == 2
    assert {(r["key"]["id"], r["op"], r["base_row_version"]) for r in second["rows"]} == {
        ("c", "UPDATE", 2), ("s", "INSERT", 0),
    }
    assert [b["source_bundle_id"] for b in harness.server.bodies("create")] == [1, 1]
    assert sorted(await harness.rows("SELECT id, body FROM docs")) == [
        ("c", "Grace Local"), ("s", "Sibling"),
    ]
    assert await harness.row_state("docs", '{"id":"s"}') == (3, 0)
    assert await harness.next_bundle_id() == 2


@pytest.mark.parametrize(
    "result", [KeepLocal(), KeepMerged({"id": "d1", "body": "Ada Merged"})],
    ids=["keep-local", "keep-merged"],
)
async def test_keeping_an_update_of_a_missing_server_row_is_invalid(
    harness: Harness, result: MergeResult
) -> None:
    """TestPushPending_StructuredConflictInvalidResolutionForDeletedAuthoritativeUpdateRestoresReplayableDirtyState:
    the server reports neither a row nor a tombstone (``server_row`` null, not deleted); the
    tombstone variant is in ``push/test_conflicts.py``."""
    await harness.synced("docs", "d1", "'d1', 'Ada'", 1)
    await harness.sql("UPDATE docs SET body = 'Ada Local' WHERE id = 'd1'")
    harness.server.push_script("commit", conflict())

    with pytest.raises(InvalidConflictResolutionError):
        await push_pending(await harness.runtime(), resolver=Recording(result))

    assert await harness.dirty() == [
        ("docs", '{"id":"d1"}', "UPDATE", 1, '{"id":"d1","body":"Ada Local"}')
    ]
    assert await harness.outbox_state() == ("none", 0, 0, 0)
    assert await harness.next_bundle_id() == 1
    assert await harness.checkpoint() == 0
    assert await harness.rows("SELECT body FROM docs") == [("Ada Local",)]


async def test_client_wins_keeps_an_edit_made_during_the_rejected_upload(
    harness: Harness,
) -> None:
    """Found while porting
    TestPushPending_StructuredConflictBuildsConflictContextFromOutboundSnapshot: the newest
    local edit must survive a client-wins resolution of an older frozen one."""
    runtime = await rejected_while_editing(
        harness, "UPDATE docs SET body = 'Edited later' WHERE id = 'd1'"
    )

    await push_pending(runtime, resolver=ClientWinsResolver())

    assert await harness.rows("SELECT body FROM docs") == [("Edited later",)]
    pushed = [r["payload"]["body"] for c in harness.server.bodies("chunk") for r in c["rows"]]
    assert "Edited later" in pushed


async def test_client_wins_rebases_the_newer_edit_on_the_server_version(
    harness: Harness,
) -> None:
    # The newer edit is what is requeued, as an UPDATE on the server's version, and the row
    # state takes that version: the next push cannot conflict again on a stale base.
    runtime = await rejected_while_editing(
        harness, "UPDATE docs SET body = 'Edited later' WHERE id = 'd1'"
    )
    harness.server.push_script("commit", conflict(version=7, row={"id": "d1", "body": "S"}))
    # The retry inside push_pending conflicts again (version 7): resolve once more, then stop.
    await push_pending(runtime, resolver=ClientWinsResolver())

    assert await harness.rows("SELECT body FROM docs") == [("Edited later",)]
    bases = [(r["base_row_version"], r["payload"]["body"])
             for c in harness.server.bodies("chunk") for r in c["rows"]]
    assert bases == [(1, "Ada Local"), (2, "Edited later"), (7, "Edited later")]


async def test_client_wins_keeps_a_newer_local_delete(harness: Harness) -> None:
    runtime = await rejected_while_editing(harness, "DELETE FROM docs WHERE id = 'd1'")

    report = await push_pending(runtime, resolver=ClientWinsResolver())

    assert report.outcome is PushOutcome.COMMITTED
    assert await harness.rows("SELECT body FROM docs") == []
    sent = [(r["op"], r["base_row_version"]) for c in harness.server.bodies("chunk")
            for r in c["rows"]]
    assert sent == [("UPDATE", 1), ("DELETE", 2)]
    assert await harness.dirty() == []


async def test_an_edit_to_another_frozen_row_survives_the_conflict(harness: Harness) -> None:
    # Only d1 conflicts; d2 was frozen in the same bundle and edited again during the upload.
    # Whatever the resolver decides for d1, d2's newer value is what goes up next.
    runtime = await rejected_while_editing(
        harness, "UPDATE docs SET body = 'Bob Newer' WHERE id = 'd2'"
    )
    # d2's first edit is pending before the push, so it is frozen in d1's bundle.
    await harness.synced("docs", "d2", "'d2', 'Bob'", 1)
    await harness.sql("UPDATE docs SET body = 'Bob Local' WHERE id = 'd2'")

    await push_pending(runtime, resolver=ServerWinsResolver())

    assert await harness.rows("SELECT id, body FROM docs ORDER BY id") == [
        ("d1", "Ada Server"), ("d2", "Bob Newer"),
    ]
    second = harness.server.bodies("chunk")[-1]["rows"]
    assert [(r["key"]["id"], r["payload"]["body"]) for r in second] == [("d2", "Bob Newer")]
