"""A foreign ``already_committed`` bundle: the push moves to a fresh source once, never loops."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from oversync_sa.client import RetryPolicy
from oversync_sa.client.errors import ForeignCommittedBundleError
from oversync_sa.client.push import push_pending
from oversync_sa.client.results import PushOutcome
from oversync_sa.client.runtime import ClientRuntime

from .conftest import SOURCE, Committed, Harness, commit_body

NO_RETRY = RetryPolicy(enabled=False)

Reply = Callable[[httpx.Request], httpx.Response]


def claim_committed(runtime: ClientRuntime, done: Committed) -> tuple[Reply, Reply]:
    """Create/rows replies claiming "(current source, requested id) is ``done``"."""
    requested: list[int] = []

    def create(request: httpx.Request) -> httpx.Response:
        requested.append(json.loads(request.content)["source_bundle_id"])
        return httpx.Response(200, json={
            "status": "already_committed", **commit_body(done),
            "source_id": runtime.source_id, "source_bundle_id": requested[-1],
        })

    def rows(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            **commit_body(done), "source_id": runtime.source_id,
            "source_bundle_id": requested[-1], "rows": done.rows,
            "next_row_ordinal": len(done.rows) - 1, "has_more": False,
        })

    return create, rows


async def _foreign_setup(harness: Harness) -> Committed:
    """d1 committed as bundle 1; d2 written locally; returns bundle 1 (d1) as the foreign one."""
    await harness.sql("INSERT INTO docs VALUES ('d1', 'hello')")
    await push_pending(await harness.runtime(retry=NO_RETRY))
    await harness.sql("INSERT INTO docs VALUES ('d2', 'mine')")
    return harness.server.by_seq[1]


async def test_foreign_bundle_moves_outbox_to_fresh_source_and_commits(harness: Harness) -> None:
    done = await _foreign_setup(harness)
    runtime = await harness.runtime(retry=NO_RETRY)
    create, rows = claim_committed(runtime, done)
    harness.server.push_script("create", create)
    harness.server.push_script("rows", rows)
    # The honest fake keys bundles by the Oversync-Source-ID header, which this harness pins
    # to SOURCE; (SOURCE, 1) is d1, so the second attempt must not ask for it.
    harness.server.push_script("create", httpx.Response(200, json={
        "push_id": "fresh", "status": "staging", "planned_row_count": 1,
        "next_expected_row_ordinal": 0,
    }))
    harness.server.sessions["fresh"] = {"source": "fresh", "body": {}, "rows": []}
    committed: list[Committed] = []

    def commit(request: httpx.Request) -> httpx.Response:
        session = harness.server.sessions["fresh"]
        session["source"] = runtime.source_id
        session["body"] = {"source_bundle_id": 1}
        committed.append(harness.server.commit_session("fresh"))
        return httpx.Response(200, json=commit_body(committed[-1]))

    harness.server.push_script("commit", commit)

    report = await push_pending(runtime)

    assert report.outcome is PushOutcome.COMMITTED
    assert runtime.source_id != SOURCE
    fresh_create = harness.server.bodies("create")[-1]
    assert fresh_create["source_bundle_id"] == 1
    assert [r["key"] for r in committed[0].rows] == [{"id": "d2"}]
    assert await harness.outbox_state() == ("none", 0, 0, 0)
    assert await harness.row_state("docs", '{"id":"d2"}') == (committed[0].seq, 0)
    assert await harness.value(
        "SELECT current_source_id FROM _sync_attachment_state"
    ) == runtime.source_id
    assert await harness.value(
        "SELECT next_source_bundle_id FROM _sync_source_state WHERE source_id = ?",
        (runtime.source_id,),
    ) == 2
    assert await harness.checkpoint() == committed[0].seq == 2


async def test_second_foreign_bundle_is_raised_not_looped(harness: Harness) -> None:
    done = await _foreign_setup(harness)
    runtime = await harness.runtime(retry=NO_RETRY)
    for _ in range(3):  # more than one failover would consume more than two of these
        create, rows = claim_committed(runtime, done)
        harness.server.push_script("create", create)
        harness.server.push_script("rows", rows)

    with pytest.raises(ForeignCommittedBundleError) as caught:
        await push_pending(runtime)

    assert caught.value.source_id == runtime.source_id != SOURCE
    assert caught.value.source_bundle_id == 1

    assert len(harness.server.named("create")) == 3  # first push + the two attempts here
    assert await harness.rows("SELECT body FROM docs WHERE id = 'd2'") == [("mine",)]
    assert await harness.value("SELECT COUNT(*) FROM _sync_outbox_rows") == 1
    assert await harness.row_state("docs", '{"id":"d2"}') is None
