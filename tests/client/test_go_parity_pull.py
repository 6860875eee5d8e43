"""Pull and snapshot behaviours pinned by go-oversync's ``oversqlite/pull_test.go`` that had no
counterpart here (Go test named in each docstring; full mapping in
``docs/go-test-parity-part1.md``; earlier ports are in ``test_go_parity_snapshot.py``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from oversync_sa.client import ClientConfig, SyncTable
from oversync_sa.client.client import SyncClient
from oversync_sa.client.errors import (
    AttachRequiredError,
    PayloadEncodingError,
    ProtocolViolationError,
)
from oversync_sa.client.results import RemoteSyncOutcome
from oversync_sa.errors import WireError
from tests.client.lifecycle.fakes import (
    CONFIG,
    SCHEMA,
    FakeServer,
    attached,
    closing,
    error,
    formerly_managed_table,
    make_client,
    ok,
    scalar,
    snapshot_routes,
    user_row,
    write,
)

PULL = "GET /api/sync/pull"
SNAPSHOTS = "POST /api/sync/snapshot-sessions"


def bundle(seq: int, *rows: dict[str, Any]) -> dict[str, Any]:
    return {"bundle_seq": seq, "source_id": "peer", "source_bundle_id": seq, "rows": list(rows)}


def page(stable: int, *bundles: dict[str, Any], has_more: bool = False) -> httpx.Response:
    return ok({"stable_bundle_seq": stable, "bundles": list(bundles), "has_more": has_more})


def truncated(body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "application/json"}, content=body)


async def synced_local_row(client: SyncClient, key: str, name: str, version: int) -> None:
    """A row as if pulled earlier: written in apply mode, with a live row state."""
    await write(client, "UPDATE _sync_apply_state SET apply_mode = 1")
    await write(client, "INSERT INTO users VALUES (?, ?)", (key, name))
    await write(client, "INSERT INTO _sync_row_state (schema_name, table_name, key_json,"
                        " row_version, deleted) VALUES ('business', 'users', ?, ?, 0)",
                (f'{{"id":"{key}"}}', version))
    await write(client, "UPDATE _sync_apply_state SET apply_mode = 0")


async def ids(client: SyncClient, table: str = "users") -> str | None:
    value = await scalar(client, f"SELECT group_concat(id) FROM (SELECT id FROM {table}"
                                 " ORDER BY id)")
    return None if value is None else str(value)


# --------------------------------------------------------------------------- pull


async def test_pull_applies_rows_of_a_key_column_not_named_id(
    tmp_path: Path, server: FakeServer
) -> None:
    """TestPullToStable_AppliesTextSyncKeyBundleRows."""
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE notes (doc_id TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL)")
    config = ClientConfig(SCHEMA, (SyncTable("notes", "doc_id"),),
                          retry_policy=CONFIG.retry_policy)
    async with closing(await make_client(path, server, config)) as client:
        await attached(client, server)
        server.queue(PULL, page(1, bundle(1, {
            "schema": SCHEMA, "table": "notes", "key": {"doc_id": "doc-1"}, "op": "INSERT",
            "row_version": 1, "payload": {"doc_id": "doc-1", "body": "Hello text key"},
        })))

        await client.pull_to_stable()

        assert await scalar(client, "SELECT body FROM notes WHERE doc_id = 'doc-1'") == (
            "Hello text key"
        )
        assert await scalar(client, "SELECT row_version || ':' || deleted FROM _sync_row_state"
                                    " WHERE key_json = '{\"doc_id\":\"doc-1\"}'") == "1:0"
        assert await client.last_bundle_seq_seen() == 1


async def test_a_failing_row_rolls_back_its_whole_bundle(
    client: SyncClient, server: FakeServer
) -> None:
    """TestPullToStable_FailedBundleApplyCheckpointBehavior, first case: the valid row of the
    same bundle is not applied either (the later-bundle case is ``pull/test_pull.py``)."""
    await attached(client, server)
    broken = user_row("b", "Broken", 1, "INSERT") | {"payload": {"id": "b"}}
    server.queue(PULL, page(1, bundle(1, user_row("a", "Ann", 1, "INSERT"), broken)))

    with pytest.raises(PayloadEncodingError):
        await client.pull_to_stable()

    assert await scalar(client, "SELECT COUNT(*) FROM users") == 0
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_row_state") == 0
    assert await client.last_bundle_seq_seen() == 0
    assert await scalar(client, "SELECT apply_mode FROM _sync_apply_state") == 0


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        # TestPullToStable_RejectsMalformedPullResponse
        (truncated(b'{"stable_bundle_seq":1,"bundles":['), "PullResponse"),
        # TestPullToStable_RejectsPullResponseMissingStableBundleSeq
        (ok({"has_more": False, "bundles": [bundle(1, user_row("a", "Ann", 1, "INSERT"))]}),
         "stable_bundle_seq"),
    ],
    ids=["truncated-body", "missing-stable-bundle-seq"],
)
async def test_undecodable_pull_page_applies_nothing(
    client: SyncClient, server: FakeServer, reply: httpx.Response, match: str
) -> None:
    await attached(client, server)
    server.queue(PULL, reply)

    with pytest.raises(ProtocolViolationError, match=match):
        await client.pull_to_stable()

    assert await scalar(client, "SELECT COUNT(*) FROM users") == 0
    assert await client.last_bundle_seq_seen() == 0
    assert server.count(PULL) == 1  # a malformed body is not retried


@pytest.mark.parametrize(
    ("second", "match"),
    [
        (page(3), "stable bundle seq changed"),
        (None, "ended early"),
    ],
    ids=["stable-seq-changed", "ended-before-ceiling"],
)
async def test_invalid_later_page_keeps_the_bundles_already_applied(
    client: SyncClient, server: FakeServer, second: httpx.Response | None, match: str
) -> None:
    """TestPullToStable_RejectsInvalidPullResponsesAfterApplyingBundle."""
    await attached(client, server)
    first = bundle(1, user_row("a", "Ann", 1, "INSERT"))
    if second is None:
        server.queue(PULL, page(2, first))
    else:
        server.queue(PULL, page(2, first, has_more=True), second)

    with pytest.raises(ProtocolViolationError, match=match):
        await client.pull_to_stable()

    assert await ids(client) == "a"
    assert await client.last_bundle_seq_seen() == 1


# --------------------------------------------------------------------------- snapshot rebuild


async def test_truncated_snapshot_chunk_changes_nothing(
    client: SyncClient, server: FakeServer
) -> None:
    """TestRebuildKeepSource_RejectsMalformedSnapshotResponse."""
    await attached(client, server)
    await synced_local_row(client, "stale", "Stale", 1)
    server.queue(SNAPSHOTS, ok({"snapshot_id": "s", "snapshot_bundle_seq": 7, "row_count": 1,
                                "expires_at": "2099-01-01T00:00:00Z"}))
    server.queue("GET /api/sync/snapshot-sessions/s", truncated(b'{"snapshot_bundle_seq":'))
    server.default("DELETE /api/sync/snapshot-sessions/s", httpx.Response(204))

    with pytest.raises(ProtocolViolationError, match="SnapshotChunkResponse"):
        await client.rebuild()

    assert await ids(client) == "stale"
    assert await client.last_bundle_seq_seen() == 0
    assert await scalar(client, "SELECT rebuild_required FROM _sync_attachment_state") == 1


async def test_rows_are_staged_and_applied_only_after_the_last_chunk(
    client: SyncClient, server: FakeServer
) -> None:
    """TestRebuildKeepSource_MultiChunkDownloadStagesRowsBeforeFinalApply (and
    TestRebuildKeepSource_OneChunkStillStagesBeforeFinalApply's point: nothing is applied while
    downloading)."""
    await attached(client, server)
    await synced_local_row(client, "stale", "Stale", 1)
    # Chunks of two rows (CONFIG.snapshot_chunk_rows): the second request comes mid-download.
    rows = [user_row("a", "Ann", 7), user_row("b", "Bob", 8), user_row("c", "Cy", 8)]
    snapshot_routes(server, rows, seq=8)
    seen_mid_download: list[tuple[int, str, int]] = []
    serve = server.defaults["GET /api/sync/snapshot-sessions/snap-1"]
    db_path = client.runtime.engine.url.database

    def observe(request: httpx.Request) -> httpx.Response:
        if request.url.params["after_row_ordinal"] != "0":
            with sqlite3.connect(str(db_path)) as raw:
                staged = raw.execute("SELECT COUNT(*) FROM _sync_snapshot_stage").fetchone()[0]
                live = raw.execute("SELECT group_concat(id) FROM users").fetchone()[0]
                state = raw.execute(
                    "SELECT rebuild_required FROM _sync_attachment_state").fetchone()[0]
            seen_mid_download.append((staged, live, state))
        assert callable(serve)
        return serve(request)

    server.default("GET /api/sync/snapshot-sessions/snap-1", observe)

    report = await client.rebuild()

    assert report.outcome is RemoteSyncOutcome.APPLIED_SNAPSHOT
    assert seen_mid_download == [(2, "stale", 1)]
    assert await ids(client) == "a,b,c"
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_snapshot_stage") == 0
    assert await client.last_bundle_seq_seen() == 8


async def test_rebuild_keeps_the_source_and_clears_every_stale_local_trace(
    client: SyncClient, server: FakeServer
) -> None:
    """TestRebuild_KeepsManagedSourceAndBundleStateOutsideSourceRecovery."""
    await attached(client, server)
    source = client.runtime.source_id
    await synced_local_row(client, "stale", "Stale", 4)
    await write(client, "INSERT INTO _sync_push_stage (bundle_seq, row_ordinal, schema_name,"
                        " table_name, key_json, op, row_version, payload) VALUES (99, 0,"
                        " 'business', 'users', '{\"id\":\"stale\"}', 'UPDATE', 4,"
                        " '{\"id\":\"stale\",\"name\":\"Stage\"}')")
    await write(client, "INSERT INTO _sync_snapshot_stage (snapshot_id, row_ordinal, schema_name,"
                        " table_name, key_json, row_version, payload) VALUES ('old', 1,"
                        " 'business', 'users', '{\"id\":\"stale\"}', 4,"
                        " '{\"id\":\"stale\",\"name\":\"Snapshot\"}')")
    await write(client, "UPDATE _sync_source_state SET next_source_bundle_id = 5"
                        " WHERE source_id = ?", (source,))
    await write(client, "UPDATE _sync_attachment_state SET last_bundle_seq_seen = 4")
    await formerly_managed_table(client, "legacy_docs")
    snapshot_routes(server, [user_row("u1", "Ada", 8), user_row("u2", "Grace", 9)], seq=9)

    await client.rebuild()

    assert client.runtime.source_id == source
    assert await scalar(client, "SELECT current_source_id FROM _sync_attachment_state") == source
    assert await scalar(client, "SELECT next_source_bundle_id FROM _sync_source_state"
                                f" WHERE source_id = '{source}'") == 5
    assert await client.last_bundle_seq_seen() == 9
    assert await scalar(client, "SELECT rebuild_required FROM _sync_attachment_state") == 0
    assert await ids(client) == "u1,u2"
    for table in ("_sync_push_stage", "_sync_snapshot_stage", "legacy_docs"):
        assert await scalar(client, f"SELECT COUNT(*) FROM {table}") == 0, table
    assert await scalar(client, "SELECT group_concat(key_json) FROM (SELECT key_json FROM"
                                " _sync_row_state ORDER BY key_json)") == (
        '{"id":"u1"},{"id":"u2"}'
    )


async def test_snapshot_apply_fails_closed_when_the_attachment_vanished(
    client: SyncClient, server: FakeServer
) -> None:
    """TestApplyStagedSnapshot_FailsClosedWhenAttachedStateIsMissing: the swap re-checks the
    attachment inside its own transaction, not only before the download."""
    await attached(client, server)
    await synced_local_row(client, "local-1", "Local", 1)
    snapshot_routes(server, [user_row("remote-1", "Remote", 7)], seq=7)
    serve = server.defaults["GET /api/sync/snapshot-sessions/snap-1"]
    db_path = str(client.runtime.engine.url.database)

    def detach_behind_the_clients_back(request: httpx.Request) -> httpx.Response:
        with sqlite3.connect(db_path) as raw:
            raw.execute("UPDATE _sync_attachment_state SET binding_state = 'anonymous',"
                        " attached_user_id = '', pending_initialization_id = ''")
        assert callable(serve)
        return serve(request)

    server.default("GET /api/sync/snapshot-sessions/snap-1", detach_behind_the_clients_back)

    with pytest.raises(AttachRequiredError):
        await client.rebuild()

    assert await ids(client) == "local-1"
    assert await scalar(client, "SELECT last_bundle_seq_seen FROM _sync_attachment_state") == 0
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_row_state"
                                " WHERE key_json = '{\"id\":\"remote-1\"}'") == 0


@pytest.mark.parametrize(
    "failure",
    [error(410, "snapshot_session_expired", "expired"),
     error(404, "snapshot_session_not_found", "gone")],
    ids=["expired-410", "not-found-404"],
)
async def test_lost_snapshot_session_keeps_source_state_until_the_retry(
    client: SyncClient, server: FakeServer, failure: httpx.Response
) -> None:
    """TestRebuild_SnapshotSessionExpiredRetryRestoresData / ...NotFound...: with source bundle
    state already advanced (the keep-source variant from checkpoint 0 is
    ``test_go_parity_snapshot.py``), the failed attempt leaves source, next source bundle id and
    checkpoint alone, and the retry keeps the source."""
    await attached(client, server)
    source = client.runtime.source_id
    await synced_local_row(client, "stale", "Stale", 1)
    await write(client, "UPDATE _sync_source_state SET next_source_bundle_id = 5"
                        " WHERE source_id = ?", (source,))
    await write(client, "UPDATE _sync_attachment_state SET last_bundle_seq_seen = 4")
    server.queue(SNAPSHOTS, ok({"snapshot_id": "first", "snapshot_bundle_seq": 9,
                                "row_count": 3, "expires_at": "2099-01-01T00:00:00Z"}))
    server.queue("GET /api/sync/snapshot-sessions/first",
                 ok({"snapshot_id": "first", "snapshot_bundle_seq": 9,
                     "rows": [user_row("a", "Ann", 8), user_row("b", "Bob", 8)],
                     "next_row_ordinal": 2, "has_more": True}),
                 failure)
    server.default("DELETE /api/sync/snapshot-sessions/first", httpx.Response(204))
    state = ("SELECT a.current_source_id || ':' || s.next_source_bundle_id || ':' ||"
             " a.last_bundle_seq_seen FROM _sync_attachment_state a JOIN _sync_source_state s"
             " ON s.source_id = a.current_source_id")

    with pytest.raises(WireError) as caught:
        await client.rebuild()
    assert caught.value.code == failure.json()["error"]

    assert server.count("GET /api/sync/snapshot-sessions/first") == 2  # not retried
    assert await scalar(client, state) == f"{source}:5:4"
    assert await ids(client) == "stale"
    snapshot_routes(server, [user_row("a", "Ann", 9)], seq=9)

    await client.rebuild()

    assert client.runtime.source_id == source
    assert await scalar(client, state) == f"{source}:5:9"
    assert await ids(client) == "a"
    assert await scalar(client, "SELECT COUNT(*) FROM _sync_snapshot_stage") == 0


CYCLIC_DDL = (
    "CREATE TABLE categories (id TEXT PRIMARY KEY NOT NULL, parent_id TEXT, name TEXT NOT NULL,"
    " FOREIGN KEY (parent_id) REFERENCES categories(id) DEFERRABLE INITIALLY DEFERRED)",
    "CREATE TABLE teams (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
    " captain_member_id TEXT REFERENCES team_members(id) DEFERRABLE INITIALLY DEFERRED)",
    "CREATE TABLE team_members (id TEXT PRIMARY KEY NOT NULL, team_id TEXT NOT NULL,"
    " name TEXT NOT NULL, FOREIGN KEY (team_id) REFERENCES teams(id)"
    " DEFERRABLE INITIALLY DEFERRED)",
)


def snapshot_row(table: str, key: str, version: int, **payload: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "table": table, "key": {"id": key}, "row_version": version,
            "payload": {"id": key, **payload}}


async def test_self_referencing_and_cyclic_rows_apply_across_chunk_boundaries(
    tmp_path: Path, server: FakeServer
) -> None:
    """TestRebuildKeepSource_DeferredFKRowsApplyAcrossChunkBoundaries (both subtests, one row
    per chunk; the parent/child case is ``test_go_parity_snapshot.py``)."""
    path = tmp_path / "cyclic.db"
    with sqlite3.connect(path) as raw:
        for statement in CYCLIC_DDL:
            raw.execute(statement)
    tables = (SyncTable("categories", "id"), SyncTable("teams", "id"),
              SyncTable("team_members", "id"))
    config = ClientConfig(SCHEMA, tables, snapshot_chunk_rows=1,
                          retry_policy=CONFIG.retry_policy)
    async with closing(await make_client(path, server, config)) as client:
        await attached(client, server)
        snapshot_routes(server, [
            snapshot_row("categories", "child", 2, parent_id="root", name="Child"),
            snapshot_row("categories", "root", 1, parent_id=None, name="Root"),
            snapshot_row("team_members", "m1", 4, team_id="t1", name="Captain"),
            snapshot_row("teams", "t1", 5, name="Ops", captain_member_id="m1"),
        ], seq=5)

        await client.rebuild()

        assert server.count("GET /api/sync/snapshot-sessions/snap-1") == 4
        assert await scalar(client, "SELECT parent_id FROM categories WHERE id = 'child'") == (
            "root"
        )
        assert await scalar(client, "SELECT captain_member_id FROM teams") == "m1"
        assert await scalar(client, "SELECT team_id FROM team_members") == "t1"
        assert await client.last_bundle_seq_seen() == 5
