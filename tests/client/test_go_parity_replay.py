"""Replay behaviours pinned by go-oversync's ``replay_equivalence_test.go`` and
``push_test.go`` that had no counterpart here (named after the Go test in each docstring)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from oversync_sa.client import RetryPolicy
from oversync_sa.client.push import push_pending
from oversync_sa.client.replay import replay_equivalent
from oversync_sa.client.results import PushOutcome
from oversync_sa.wire import HashRow, bundle_hash
from tests.client.lifecycle.fakes import CAPS, FakeServer, make_client, ok
from tests.client.push.conftest import (
    Committed,
    Harness,
    commit_body,
    harness as push_harness,  # noqa: F401  (a fixture)
    hash_rows,
)

NO_RETRY = RetryPolicy(enabled=False)


@pytest.mark.parametrize(
    ("left", "right", "equivalent"),
    [
        # TestReplayEquivalentJSON_RFC3339InstantsWithDifferentOffsetsMatch
        ("2026-03-24T18:42:11Z", "2026-03-24T20:42:11+02:00", True),
        ("2026-03-24T18:42:11.5Z", "2026-03-24T13:42:11.500-05:00", True),
        ("2026-03-24T18:42:11Z", "2026-03-24T18:42:12Z", False),
        # TestReplayEquivalentJSON_NaiveTimestampTextDoesNotMatchZonedInstant
        ("2026-03-24 18:42:11", "2026-03-24T18:42:11Z", False),
        ("2026-03-24T18:42:11", "2026-03-24T18:42:11Z", False),
        # The naive text still equals itself.
        ("2026-03-24 18:42:11", "2026-03-24 18:42:11", True),
    ],
)
def test_replay_equivalence_of_timestamps(left: str, right: str, equivalent: bool) -> None:
    assert replay_equivalent({"at": left}, {"at": right}) is equivalent
    assert replay_equivalent({"at": right}, {"at": left}) is equivalent


def test_replay_equivalence_of_numbers_and_structure() -> None:
    assert replay_equivalent({"n": 1, "m": [1.0, 2]}, {"m": [1, 2.0], "n": 1.0})
    assert not replay_equivalent({"n": 1}, {"n": 1, "extra": None})
    assert not replay_equivalent({"b": True}, {"b": 1})
    assert not replay_equivalent([1, 2], [2, 1])


async def test_already_committed_proof_ignores_equivalent_row_order(
    push_harness: Harness,  # noqa: F811  (the imported fixture)
) -> None:
    """TestCompareCommittedBundleToCanonicalOutbox_IgnoresEquivalentRowOrder.

    The commit succeeds but its reply is lost; the retry's ``already_committed`` bundle lists
    the same rows in another order: it is still proven ours and replayed, not treated as
    another writer's.
    """
    harness = push_harness
    await harness.sql("INSERT INTO docs VALUES ('d1', 'one')")
    await harness.sql("INSERT INTO docs VALUES ('d2', 'two')")

    def commit_then_reorder(request: httpx.Request) -> httpx.Response:
        done = harness.server.commit_session(request.url.path.split("/")[3])
        reordered = list(reversed(done.rows))
        harness.server.bundles[(done.source_id, done.source_bundle_id)] = Committed(
            done.seq, done.source_id, done.source_bundle_id, reordered, hash_rows(reordered)
        )
        harness.server.by_seq[done.seq] = harness.server.bundles[
            (done.source_id, done.source_bundle_id)
        ]
        raise httpx.ReadError("reply lost", request=request)

    harness.server.push_script("commit", commit_then_reorder)
    runtime = await harness.runtime(retry=NO_RETRY)
    with pytest.raises(Exception, match="reply lost"):
        await push_pending(runtime)
    assert [r["key"]["id"] for r in harness.server.by_seq[1].rows] == ["d2", "d1"]
    source = runtime.source_id

    report = await push_pending(await harness.runtime(retry=NO_RETRY))

    assert report.outcome is PushOutcome.COMMITTED
    assert harness.server.bodies("create")[-1]["source_bundle_id"] == 1
    assert await harness.outbox_state() == ("none", 0, 0, 0)
    assert await harness.row_state("docs", '{"id":"d1"}') == (1, 0)
    assert await harness.row_state("docs", '{"id":"d2"}') == (1, 0)
    assert await harness.value("SELECT current_source_id FROM _sync_attachment_state") == source
    assert len(harness.server.bundles) == 1
    assert commit_body(harness.server.by_seq[1])["row_count"] == 2


async def test_push_replay_defers_immediate_foreign_keys(tmp_path: Path) -> None:
    """TestPushPending_AuthoritativeReplayRunsWithDeferredForeignKeys: the committed bundle may
    list a child before its parent - here a server-side trigger's post for a server-created
    user - and ``posts.author_id`` is an *immediate* FK locally."""
    server = FakeServer()
    client = await make_client(tmp_path / "fk.db", server)
    try:
        server.default("GET /api/sync/capabilities", CAPS)
        server.queue("POST /api/sync/connect", ok({"resolution": "initialize_empty"}))
        await client.open()
        await client.attach("u1")
        async with client.runtime.engine.begin() as conn:
            await conn.exec_driver_sql("INSERT INTO users VALUES ('a', 'Ann')")
            await conn.exec_driver_sql("INSERT INTO posts VALUES ('p', 'Post', 'a')")
        source = client.runtime.source_id
        rows = [  # children first; "srv" and "w" are server-side effects, not uploaded
            {"schema": "business", "table": "posts", "key": {"id": "w"}, "op": "INSERT",
             "row_version": 1, "payload": {"id": "w", "title": "Welcome", "author_id": "srv"}},
            {"schema": "business", "table": "posts", "key": {"id": "p"}, "op": "INSERT",
             "row_version": 1, "payload": {"id": "p", "title": "Post", "author_id": "a"}},
            {"schema": "business", "table": "users", "key": {"id": "srv"}, "op": "INSERT",
             "row_version": 1, "payload": {"id": "srv", "name": "Server"}},
            {"schema": "business", "table": "users", "key": {"id": "a"}, "op": "INSERT",
             "row_version": 1, "payload": {"id": "a", "name": "Ann"}},
        ]
        digest = bundle_hash(
            [HashRow(r["schema"], r["table"], r["key"], r["op"], 1,
                     json.dumps(r["payload"]).encode()) for r in rows],
            payloads_canonical=False,
        )[0]
        meta = {"bundle_seq": 1, "source_id": source, "source_bundle_id": 1, "row_count": 4,
                "bundle_hash": digest}
        server.queue("POST /api/sync/push-sessions", ok({
            "push_id": "p1", "status": "staging", "planned_row_count": 2,
            "next_expected_row_ordinal": 0,
        }))
        server.queue("POST /api/sync/push-sessions/p1/chunks",
                     ok({"push_id": "p1", "next_expected_row_ordinal": 2}))
        server.queue("POST /api/sync/push-sessions/p1/commit", ok(meta))
        server.queue("GET /api/sync/committed-bundles/1/rows",
                     ok({**meta, "rows": rows, "next_row_ordinal": 3, "has_more": False}))

        report = await client.push_pending()

        assert report.outcome is PushOutcome.COMMITTED
        async with client.runtime.engine.connect() as conn:
            states = (await conn.exec_driver_sql(
                "SELECT table_name, key_json FROM _sync_row_state ORDER BY table_name, key_json"
            )).all()
            welcome = (await conn.exec_driver_sql(
                "SELECT author_id FROM posts WHERE id = 'w'"
            )).scalar()
            checkpoint = (await conn.exec_driver_sql(
                "SELECT last_bundle_seq_seen FROM _sync_attachment_state"
            )).scalar()
        assert [tuple(s) for s in states] == [
            ("posts", '{"id":"p"}'), ("posts", '{"id":"w"}'),
            ("users", '{"id":"a"}'), ("users", '{"id":"srv"}'),
        ]
        assert welcome == "srv"
        assert checkpoint == 1
    finally:
        await client.close()
        await client.runtime.engine.dispose()
