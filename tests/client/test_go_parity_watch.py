"""Watch-mode behaviours of the background downloader pinned by go-oversync's
``oversqlite/watch_test.go`` that had no counterpart here (each docstring names the Go test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from oversync_sa.client import BundleChangeWatchMode, DownloadMode, LoopPhase, SyncClient
from tests.client.facade.server import (
    SyncServer,
    attached,
    config,
    eventually,
    make_client,
    sse,
)
from tests.client.facade.test_watch import (
    cleanup as cleanup,  # a fixture
    watch_server,
)


async def new_client(
    tmp_path: Path, server: SyncServer, cleanup: list[SyncClient], **overrides: object
) -> SyncClient:
    options: dict[str, object] = {
        "bundle_change_watch_mode": BundleChangeWatchMode.AUTO, "backoff_min": 0.01,
        "backoff_max": 0.04,
    }
    options.update(overrides)
    client = await attached(await make_client(tmp_path / "c.db", server, config(**options)))
    cleanup.append(client)
    return client


async def test_watch_off_polls_even_when_the_server_advertises(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    """TestStart_DoesNotCallWatchWhenClientWatchOffEvenIfServerAdvertises."""
    server = watch_server()
    client = await new_client(
        tmp_path, server, cleanup, bundle_change_watch_mode=BundleChangeWatchMode.OFF
    )
    capabilities = len(server.named("capabilities"))

    await client.start()
    await eventually(lambda: len(server.named("pull")) >= 2)

    assert client.background_status.download_mode is DownloadMode.POLLING
    assert server.named("watch") == []
    assert len(server.named("capabilities")) == capabilities


async def test_auto_watch_opens_the_stream_from_the_checkpoint_with_the_source(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    """TestStart_UsesWatchWhenClientAutoAndServerAdvertises."""
    server = watch_server()
    hold = asyncio.Event()
    server.watch = [sse(": heartbeat\n\n", hold=hold)]
    client = await new_client(tmp_path, server, cleanup)

    await client.start()
    await eventually(lambda: server.named("watch"))

    (request,) = server.named("watch")
    assert request.url.params["after_bundle_seq"] == "0"
    assert request.headers["Oversync-Source-ID"] == client.runtime.source_id
    await eventually(lambda: client.background_status.download_mode is DownloadMode.WATCH)
    hold.set()


async def test_watch_setup_waits_out_lock_contention_instead_of_polling(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    """TestStart_WatchSetupWaitsForStartupSyncContention: a busy client lock delays the
    watch decision; it neither pulls meanwhile nor settles for polling."""
    server = watch_server()
    hold = asyncio.Event()
    server.watch = [sse(": heartbeat\n\n", hold=hold)]
    client = await new_client(tmp_path, server, cleanup)
    client.pause_uploads()

    async with client.runtime.operation("test holds the lock"):
        await client.start()
        await asyncio.sleep(0.05)
        assert server.named("pull") == []
        assert server.named("watch") == []
        assert client.background_status.download_mode is DownloadMode.DECIDING

    await eventually(lambda: server.named("watch"))
    assert client.background_status.download_mode is DownloadMode.WATCH
    assert server.named("pull") == []
    hold.set()


async def test_watch_request_carries_the_current_source_after_rotation(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    """TestStart_WatchReconnectUsesCurrentSourceIDAfterRotation: the header is read per
    request, so a stream (re)opened after a source rotation names the new source."""
    server = watch_server()
    server.watch = [sse()]
    client = await new_client(tmp_path, server, cleanup)
    client.runtime.source_id = "fresh-device"

    async with client.runtime.transport.watch(0) as events:
        assert [e async for e in events] == []

    (request,) = server.named("watch")
    assert request.headers["Oversync-Source-ID"] == "fresh-device"


async def test_paused_downloads_neither_watch_nor_pull(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    """TestStart_WatchRespectsPausedDownloads."""
    server = watch_server()
    server.watch = [sse(": heartbeat\n\n")]
    client = await new_client(tmp_path, server, cleanup)
    client.pause_downloads()

    await client.start()
    await eventually(lambda: client.background_status.download.phase is LoopPhase.PAUSED)
    await asyncio.sleep(0.05)

    assert server.named("watch") == []
    assert server.named("pull") == []


async def test_stop_closes_an_open_watch_stream(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    """TestWatchRemoteChanges_StopsOnContextCancel: stopping ends a stream that is still open
    (the server never closes it here) without waiting for more events."""
    server = watch_server()
    never = asyncio.Event()
    server.watch = [sse(": heartbeat\n\n", hold=never)]
    client = await new_client(tmp_path, server, cleanup)
    await client.start()
    await eventually(lambda: client.background_status.watch_connected)

    await asyncio.wait_for(client.stop(grace=1.0), timeout=5)

    status = client.background_status
    assert not status.running
    assert not status.watch_connected
    assert len(server.named("watch")) == 1
