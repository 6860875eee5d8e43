"""SyncClient facade: sync(), sync_then_detach(), SyncSession, resolver/stats wiring, progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from oversync_sa.client import (
    AcceptServer,
    AttachRequiredError,
    ClientWinsResolver,
    ConfigFieldError,
    ConflictContext,
    DetachOutcome,
    MergeResult,
    PushOutcome,
    RemoteSyncOutcome,
    ServerWinsResolver,
    SyncClient,
    UnexpectedStatusError,
)
from tests.client.facade.server import (
    BASE_URL,
    SyncServer,
    attached,
    execute,
    query,
    user_row,
)


async def test_sync_pushes_then_pulls_with_progress(
    client: SyncClient, server: SyncServer
) -> None:
    await attached(client)
    await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann'), ('b', 'Bob')")
    server.commit_external(user_row("x", "Xavier"))
    server.commit_external(user_row("y", "Yvonne"))
    pushed: list[tuple[int, int]] = []
    pulled: list[tuple[int, int]] = []

    async def on_pull(done: int, total: int) -> None:  # async callbacks are awaited
        pulled.append((done, total))

    report = await client.sync(
        push_progress=lambda d, t: pushed.append((d, t)), pull_progress=on_pull
    )

    assert report.push_outcome is PushOutcome.COMMITTED
    # Our bundle became seq 3 (not checkpoint + 1), so the pull also fetches it (§12.9).
    assert report.remote_outcome is RemoteSyncOutcome.APPLIED_INCREMENTAL
    assert report.status is not None
    assert report.status.last_bundle_seq_seen == 3
    assert pushed == [(0, 2), (1, 2), (2, 2)]  # upload_limit=1: one call per chunk
    assert pulled == [(1, 3), (2, 3), (3, 3)]
    assert sorted(await query(client, "SELECT id FROM users")) == [("a",), ("b",), ("x",), ("y",)]
    assert {r["key"]["id"] for r in server.pushed_rows()} == {"a", "b"}
    assert client.push_stats.sessions_created == 1
    assert client.push_stats.chunks_uploaded == 2


async def test_sync_requires_attach_and_makes_no_request(
    client: SyncClient, server: SyncServer
) -> None:
    await client.open()
    with pytest.raises(AttachRequiredError):
        await client.sync()
    assert server.requests == []


async def test_sync_with_both_directions_paused(client: SyncClient, server: SyncServer) -> None:
    await attached(client)
    await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    sent = len(server.requests)
    client.pause_uploads()
    client.pause_downloads()
    report = await client.sync()
    assert (report.push_outcome, report.remote_outcome) == (
        PushOutcome.SKIPPED_PAUSED, RemoteSyncOutcome.SKIPPED_PAUSED,
    )
    assert len(server.requests) == sent
    client.resume_uploads()
    client.resume_downloads()
    report = await client.sync()
    assert report.push_outcome is PushOutcome.COMMITTED


async def test_sync_push_error_aborts_before_pull(client: SyncClient, server: SyncServer) -> None:
    await attached(client)
    await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    server.push_script("create", httpx.Response(500, text="boom"))
    with pytest.raises(UnexpectedStatusError):
        await client.sync()
    assert server.named("pull") == []


async def test_sync_then_detach_succeeds_in_one_round(
    client: SyncClient, server: SyncServer
) -> None:
    await attached(client)
    await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    result = await client.sync_then_detach()
    assert result.is_success
    assert result.sync_rounds == 1
    assert result.remaining_pending_row_count == 0
    assert result.last_sync is not None
    assert result.last_sync.push_outcome is PushOutcome.COMMITTED
    assert await query(client, "SELECT id FROM users") == []  # detach clears managed tables
    assert len(server.pushed_rows()) == 1


async def test_sync_then_detach_stops_when_pending_does_not_shrink(client: SyncClient) -> None:
    await attached(client)
    await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    client.pause_uploads()
    client.pause_downloads()
    result = await client.sync_then_detach()
    assert not result.is_success
    assert result.detach.outcome is DetachOutcome.BLOCKED_UNSYNCED_DATA
    assert (result.sync_rounds, result.remaining_pending_row_count) == (2, 1)
    assert await query(client, "SELECT id FROM users") == [("a",)]


async def test_sync_then_detach_propagates_sync_errors(
    client: SyncClient, server: SyncServer
) -> None:
    await attached(client)
    await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    server.push_script("create", httpx.Response(500, text="boom"))
    with pytest.raises(UnexpectedStatusError):
        await client.sync_then_detach()
    assert await query(client, "SELECT id FROM users") == [("a",)]


async def test_session_sync_commits_orm_work_then_syncs(
    client: SyncClient, server: SyncServer
) -> None:
    await attached(client)
    async with client.session() as session:
        await session.execute(text("INSERT INTO users (id, name) VALUES ('s', 'Sam')"))
        report = await session.sync()
    assert report.push_outcome is PushOutcome.COMMITTED
    assert [r["key"]["id"] for r in server.pushed_rows()] == ["s"]


class Spy:
    def __init__(self, result: MergeResult) -> None:
        self.result = result
        self.contexts: list[ConflictContext] = []

    def resolve(self, context: ConflictContext) -> MergeResult:
        self.contexts.append(context)
        return self.result


def conflict_reply(key: str) -> httpx.Response:
    return httpx.Response(409, json={
        "error": "push_conflict", "message": "conflict",
        "conflict": {
            "schema": "business", "table": "users", "key": {"id": key}, "op": "INSERT",
            "base_row_version": 0, "server_row_version": 7, "server_row_deleted": False,
            "server_row": {"id": key, "name": "Server"},
        },
    })


async def test_resolver_defaults_to_server_wins_and_is_settable(client: SyncClient) -> None:
    assert isinstance(client.resolver, ServerWinsResolver)
    client.resolver = ClientWinsResolver()
    assert isinstance(client.resolver, ClientWinsResolver)
    client.resolver = None
    assert isinstance(client.resolver, ServerWinsResolver)


@pytest.mark.parametrize("via", ["push_pending", "sync"])
async def test_client_resolver_decides_push_conflicts(
    client: SyncClient, server: SyncServer, via: str
) -> None:
    await attached(client)
    await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    spy = Spy(AcceptServer())
    client.resolver = spy
    server.push_script("commit", conflict_reply("a"))
    if via == "sync":
        report: Any = await client.sync()
        outcome = report.push_outcome
    else:
        outcome = (await client.push_pending()).outcome
    assert [c.key for c in spy.contexts] == [{"id": "a"}]
    assert outcome is PushOutcome.NO_CHANGE
    assert await query(client, "SELECT id, name FROM users") == [("a", "Server")]


async def test_push_stats_accumulate_and_reset(client: SyncClient, server: SyncServer) -> None:
    await attached(client)
    for key in ("a", "b"):
        await execute(client, "INSERT INTO users (id, name) VALUES (?, 'N')", (key,))
        await client.push_pending()
    stats = client.push_stats
    assert (stats.sessions_created, stats.chunks_uploaded, stats.committed_bundle_chunks_read) == (
        2, 2, 2,
    )
    stats.reset()
    assert client.runtime.push_stats.sessions_created == 0


async def test_create_needs_config_or_models(tmp_path: Path) -> None:
    with pytest.raises(ConfigFieldError, match="config"):
        await SyncClient.create(tmp_path / "x.db", BASE_URL, lambda: "t")
    assert not (tmp_path / "x.db").exists()
