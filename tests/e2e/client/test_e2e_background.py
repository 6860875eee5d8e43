"""Background sync against the live server: the watch stream wakes the downloader.

Timings are chosen so only the watch can explain the observed pulls: the watch fallback pull
runs every 60 s and the test waits at most a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from oversync_sa.client.background import DownloadMode
from oversync_sa.client.config import BundleChangeWatchMode
from oversync_sa.client.results import RemoteSyncReport
from tests.e2e.client._support import (
    INSERT_USER,
    SERVER_INSERT_USER,
    Device,
    Harness,
    new_id,
    new_user,
    server_ids,
)

pytestmark = pytest.mark.postgres

WAKE_UP_SECONDS = 5.0


async def eventually(check: Callable[[], Awaitable[bool]], limit: float, what: str) -> float:
    """Poll ``check`` until it holds; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {limit}s waiting for {what}")


async def subscribers(harness: Harness, user: str) -> int:
    client = await harness.http()
    resp = await client.get("/test/watch-subscribers", params={"user_id": user})
    assert resp.status_code == 200, resp.text
    return int(resp.json()["subscriber_count"])


async def watching_device(harness: Harness, user: str) -> tuple[Device, list[Any]]:
    device = await harness.device(
        "watcher", user=user,
        bundle_change_watch_mode=BundleChangeWatchMode.AUTO,
        watch_fallback_interval=60.0, backoff_min=0.2, backoff_max=60.0,
    )
    await device.attach()
    synced: list[Any] = []

    def on_sync(loop: str, report: object) -> None:
        synced.append((loop, report))

    await device.c.start(on_sync=on_sync)
    await eventually(
        lambda: _connected(harness, device, user), WAKE_UP_SECONDS, "the watch stream"
    )
    return device, synced


async def _connected(harness: Harness, device: Device, user: str) -> bool:
    status = device.c.background_status
    return (
        status.download_mode is DownloadMode.WATCH
        and status.watch_connected
        and await subscribers(harness, user) == 1
    )


async def test_watch_wakes_the_downloader_for_peer_and_server_bundles(harness: Harness) -> None:
    user = new_user()
    writer = await harness.device("writer", user=user)
    await writer.attach()
    watcher, synced = await watching_device(harness, user)
    try:
        row = new_id()
        await writer.execute(INSERT_USER, (row.bytes, "Peer", "peer@example.com"))
        await writer.c.sync()

        async def has(ids: set[Any]) -> bool:
            return await watcher.ids("users") == ids

        await eventually(lambda: has({row}), WAKE_UP_SECONDS, "the peer's bundle")
        server_row = new_id()
        await harness.server_write(user, [(SERVER_INSERT_USER, {"id": server_row})])
        await eventually(lambda: has({row, server_row}), WAKE_UP_SECONDS, "the server bundle")

        downloads = [r for loop, r in synced if loop == "download"]
        assert downloads
        assert all(isinstance(r, RemoteSyncReport) for r in downloads)
        # The upload loop pushes local writes on its own as well.
        local = new_id()
        await watcher.execute(INSERT_USER, (local.bytes, "Local", "local@example.com"))

        async def uploaded() -> bool:
            return local in await server_ids(harness, user, "users")

        await eventually(uploaded, WAKE_UP_SECONDS, "the background upload")
        status = watcher.c.background_status
        assert status.download_mode is DownloadMode.WATCH
        assert status.upload.last_error is None or status.upload.consecutive_failures == 0
    finally:
        await watcher.c.stop(grace=5)

    assert not watcher.c.background_status.running

    async def unsubscribed() -> bool:
        return await subscribers(harness, user) == 0

    await eventually(unsubscribed, WAKE_UP_SECONDS, "the stream to close after stop()")
    await writer.c.sync()
    assert await writer.ids("users") == await watcher.ids("users")
