"""Background loops (§9.3): timers, backoff, 401 handling, lifecycle blocking, stop/close."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from oversync_sa.client import (
    AuthorityStatus,
    ClientClosedError,
    DownloadMode,
    LoopPhase,
    PushReport,
    RemoteSyncReport,
    SyncClient,
    UnexpectedStatusError,
)
from tests.client.facade.server import (
    SyncServer,
    attach_retrying,
    attached,
    config,
    error,
    eventually,
    execute,
    make_client,
    query,
    user_row,
)


class Events:
    def __init__(self) -> None:
        self.errors: list[tuple[str, BaseException]] = []
        self.syncs: list[tuple[str, Any]] = []

    def on_error(self, loop: str, exc: BaseException) -> None:
        self.errors.append((loop, exc))

    async def on_sync(self, loop: str, report: PushReport | RemoteSyncReport) -> None:
        self.syncs.append((loop, report))


async def test_loops_push_local_writes_and_pull_remote_bundles(
    client: SyncClient, server: SyncServer
) -> None:
    await attached(client)
    events = Events()
    await client.start(on_error=events.on_error, on_sync=events.on_sync)
    status = client.background_status
    assert status.running
    assert status.download_mode in (DownloadMode.DECIDING, DownloadMode.POLLING)

    await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    await eventually(lambda: server.pushed_rows())
    server.commit_external(user_row("x", "Xavier"))

    async def has_x() -> bool:
        return ("x",) in await query(client, "SELECT id FROM users")

    await eventually(has_x)
    await eventually(lambda: {name for name, _ in events.syncs} == {"upload", "download"})
    assert events.errors == []
    status = client.background_status
    assert status.download_mode is DownloadMode.POLLING
    assert status.upload.successes > 0
    assert status.download.successes > 0
    assert status.upload.last_success_at is not None
    await client.stop()
    status = client.background_status
    assert not status.running
    assert status.upload.phase is status.download.phase is LoopPhase.STOPPED


async def test_no_change_operations_do_not_call_on_sync(client: SyncClient) -> None:
    await attached(client)
    events = Events()
    await client.start(on_sync=events.on_sync)
    await eventually(lambda: client.background_status.upload.successes >= 3)
    await eventually(lambda: client.background_status.download.successes >= 3)
    assert events.syncs == []


async def test_failures_back_off_exponentially_and_are_reported(
    tmp_path: Path, server: SyncServer
) -> None:
    client = await make_client(
        tmp_path / "c.db", server, config(backoff_min=0.02, backoff_max=0.08)
    )
    try:
        await attached(client)
        await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
        server.push_script("create", *[httpx.Response(500, text="down")] * 50)
        events = Events()
        await client.start(on_error=events.on_error)
        await eventually(lambda: client.background_status.upload.consecutive_failures >= 4)
        upload = client.background_status.upload
        assert upload.phase is LoopPhase.BACKING_OFF
        assert upload.backoff == 0.08  # doubled from 0.02 and capped
        assert isinstance(upload.last_error, UnexpectedStatusError)
        assert {name for name, _ in events.errors} == {"upload"}
        # The download loop is unaffected except for expected contention (dirty rows).
        assert client.background_status.download.consecutive_failures == 0
        # 0.02 + 0.04 + 0.08 + 0.08 ...: far fewer attempts than a tight loop would make.
        started = len(server.named("create"))
        await asyncio.sleep(0.2)
        assert len(server.named("create")) - started <= 4
        server.script["create"].clear()
        await eventually(lambda: server.pushed_rows())
        await eventually(lambda: client.background_status.upload.consecutive_failures == 0)
        assert client.background_status.upload.backoff == 0.02
    finally:
        await client.close()
        await client.runtime.engine.dispose()


async def test_unauthorized_is_never_retried_in_a_tight_loop(
    tmp_path: Path, server: SyncServer
) -> None:
    client = await make_client(
        tmp_path / "c.db", server, config(backoff_min=0.001, backoff_max=10.0)
    )
    try:
        await attached(client)
        await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
        server.push_script("create", *[error(401, "authentication_failed")] * 5)
        events = Events()
        await client.start(on_error=events.on_error)
        await eventually(lambda: client.background_status.auth_failed)
        await asyncio.sleep(0.1)  # 100 backoff_min periods
        assert len(server.named("create")) == 1
        status = client.background_status
        assert status.upload.phase is LoopPhase.AUTH_FAILED
        assert status.upload.backoff == 10.0
        assert [name for name, _ in events.errors] == ["upload"]
        await asyncio.wait_for(client.stop(), 1.0)  # waiting 10 s is cancellable
    finally:
        await client.close()
        await client.runtime.engine.dispose()


async def test_started_before_attach_waits_blocked_without_requests(
    client: SyncClient, server: SyncServer
) -> None:
    await client.open()
    events = Events()
    await client.start(on_error=events.on_error)
    await eventually(lambda: client.background_status.upload.phase is LoopPhase.BLOCKED)
    await eventually(lambda: client.background_status.download.phase is LoopPhase.BLOCKED)
    await asyncio.sleep(0.05)
    assert server.requests == []
    assert events.errors == []  # lifecycle misuse is a status, not an error report
    await attach_retrying(client)  # the loops contend for the lock (§12.21)
    await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    await eventually(lambda: server.pushed_rows())


async def test_lock_contention_is_not_an_error(client: SyncClient, server: SyncServer) -> None:
    await attached(client)
    events = Events()
    async with client.runtime.operation("test holds the lock"):
        await client.start(on_error=events.on_error)
        await asyncio.sleep(0.05)
        assert server.named("pull") == []
        assert server.named("create") == []
    await eventually(lambda: client.background_status.download.successes > 0)
    status = client.background_status
    assert events.errors == []
    assert status.upload.consecutive_failures == status.download.consecutive_failures == 0


async def test_paused_directions_make_no_requests(client: SyncClient, server: SyncServer) -> None:
    await attached(client)
    client.pause_uploads()
    client.pause_downloads()
    await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    sent = len(server.requests)
    await client.start()
    await eventually(lambda: client.background_status.upload.phase is LoopPhase.PAUSED)
    await eventually(lambda: client.background_status.download.phase is LoopPhase.PAUSED)
    await asyncio.sleep(0.05)
    assert len(server.requests) == sent
    client.resume_uploads()
    await eventually(lambda: server.pushed_rows())


async def test_callback_exceptions_do_not_stop_the_loops(
    client: SyncClient, server: SyncServer
) -> None:
    await attached(client)
    calls: list[str] = []

    def broken(loop: str, _report: object) -> None:
        calls.append(loop)
        raise RuntimeError("callback bug")

    await client.start(on_sync=broken)
    await execute(client, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    await eventually(lambda: "upload" in calls)
    await execute(client, "INSERT INTO users (id, name) VALUES ('b', 'Bob')")
    await eventually(lambda: calls.count("upload") == 2)
    assert client.background_status.running


async def test_start_twice_and_after_close(client: SyncClient) -> None:
    await attached(client)
    await client.start()
    with pytest.raises(RuntimeError, match="already running"):
        await client.start()
    await client.stop()
    await client.start()  # a stopped client can start again
    await client.close()  # close stops the loops first
    assert not client.background_status.running
    with pytest.raises(ClientClosedError):
        await client.start()


async def test_closed_client_ends_the_loops(client: SyncClient) -> None:
    await attached(client)
    await client.start()
    client.runtime.closed = True  # as if closed behind the loops' back
    await eventually(lambda: not client.background_status.running)
    client.runtime.closed = False


async def test_stop_before_start_is_a_no_op(client: SyncClient) -> None:
    await client.stop()
    status = client.background_status
    assert not status.running
    assert not status.auth_failed
    assert status.upload.phase is LoopPhase.STOPPED


async def test_stop_cancels_an_operation_exceeding_the_grace_period(
    client: SyncClient, server: SyncServer
) -> None:
    await attached(client)
    entered = asyncio.Event()

    async def slow_pull(*_args: Any, **_kwargs: Any) -> RemoteSyncReport:
        async with client.runtime.operation("PullToStable()"):
            entered.set()
            await asyncio.Event().wait()  # never finishes on its own
        raise AssertionError("unreachable")

    client.pull_to_stable = slow_pull  # type: ignore[method-assign]
    await client.start()
    await asyncio.wait_for(entered.wait(), 2)
    await asyncio.wait_for(client.stop(grace=0.01), 1)
    assert not client.background_status.running
    status = await client.sync_status()  # the lock was released by the cancellation
    assert status.authority is AuthorityStatus.AUTHORITATIVE_EMPTY
