"""BlockingSyncClient: the same operations from synchronous code on a private loop thread."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from oversync_sa.client import (
    AttachRequiredError,
    BlockingSyncClient,
    ClientWinsResolver,
    ConfigFieldError,
    PushOutcome,
    RemoteSyncOutcome,
)
from tests.client.facade.server import BASE_URL, DDL, SyncServer, config, user_row


def blocking(path: Path, server: SyncServer) -> BlockingSyncClient:
    with sqlite3.connect(path) as raw:
        for statement in DDL:
            raw.execute(statement)
    return BlockingSyncClient.create(
        path, BASE_URL, lambda: "tok", config(), http_transport=server.transport
    )


def oversync_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "oversync-client")


def test_blocking_client_runs_the_whole_flow(tmp_path: Path) -> None:
    server = SyncServer()
    before = oversync_threads()
    client = blocking(tmp_path / "b.db", server)
    try:
        client.open()
        with pytest.raises(AttachRequiredError):  # async errors re-raised in the caller
            client.sync()
        client.attach("u1")
        with sqlite3.connect(tmp_path / "b.db") as raw:
            raw.execute("INSERT INTO users (id, name) VALUES ('a', 'Ann')")
        progress: list[tuple[int, int]] = []
        assert client.push_pending(lambda d, t: progress.append((d, t))).outcome is (
            PushOutcome.COMMITTED
        )
        assert progress[-1] == (1, 1)
        server.commit_external(user_row("x", "X"))
        assert client.pull_to_stable().outcome is RemoteSyncOutcome.APPLIED_INCREMENTAL
        assert client.sync().push_outcome is PushOutcome.NO_CHANGE
        assert client.last_bundle_seq_seen() == 2
        assert client.sync_status().last_bundle_seq_seen == 2
        assert not client.pending_sync_status().has_pending_sync_data
        client.resolver = ClientWinsResolver()
        assert isinstance(client.client.resolver, ClientWinsResolver)
        assert client.sync_then_detach().is_success
    finally:
        client.close()
    assert oversync_threads() == before


def test_blocking_client_background_sync(tmp_path: Path) -> None:
    server = SyncServer()
    client = blocking(tmp_path / "b.db", server)
    try:
        client.open()
        client.attach("u1")
        client.start()
        assert client.background_status.running
        with sqlite3.connect(tmp_path / "b.db") as raw:
            raw.execute("INSERT INTO users (id, name) VALUES ('a', 'Ann')")
        deadline = time.monotonic() + 3
        while not server.pushed_rows() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r["key"]["id"] for r in server.pushed_rows()] == ["a"]
        client.stop()
        assert not client.background_status.running
    finally:
        client.close()


def test_blocking_create_failure_stops_the_thread(tmp_path: Path) -> None:
    before = oversync_threads()
    with pytest.raises(ConfigFieldError):
        BlockingSyncClient.create(tmp_path / "x.db", BASE_URL, lambda: "t")
    assert oversync_threads() == before

