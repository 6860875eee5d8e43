"""Bundle-change watch (``/sync/watch``): wake-ups instead of polling, driven by the client's own
``start()`` background sync. The 30 s fallback interval is far beyond the 5 s deadlines, so a
pass proves the wake-up path (or, for the ``off``/unsupported cases, fast polling)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

import httpx

from examples.mobile_flow.context import ScenarioContext, ScenarioSkipped, scenario
from examples.mobile_flow.device import Device
from examples.mobile_flow.schema import client_config
from oversync_sa.client import ClientConfig
from oversync_sa.client.results import PushOutcome

DEADLINE: Final = 5.0
FALLBACK_INTERVAL: Final = 30.0


def _config(watch: bool) -> ClientConfig:
    return client_config(
        upload_limit=100,
        download_limit=1000,
        backoff_min=0.025,
        backoff_max=0.25,
        watch=watch,
        watch_fallback_interval=FALLBACK_INTERVAL,
    )


async def _start(device: Device) -> None:
    start = getattr(device.client, "start", None)
    if start is None:
        raise ScenarioSkipped("this oversync_sa client has no start() background sync")
    await start()


async def _stop(device: Device) -> None:
    await device.client.stop()


async def _until(what: str, probe: Callable[[], Awaitable[bool]]) -> float:
    """Poll ``probe`` every 10 ms; returns the seconds it took, fails after ``DEADLINE``."""
    started = time.monotonic()
    while True:
        if await probe():
            return time.monotonic() - started
        if time.monotonic() - started > DEADLINE:
            raise AssertionError(f"timed out after {DEADLINE:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)


async def _converged(ctx: ScenarioContext, device: Device, row: str, name: str, seq: int) -> float:
    async def probe() -> bool:
        found = await device.scalar("SELECT name FROM users WHERE id = :id", {"id": row})
        if found is not None:
            ctx.equal(found, name, f"{device.name}: name of the watched row")
        return found is not None and await device.last_seq() >= seq

    took = await _until(f"{device.name} to receive {name}", probe)
    ctx.debug(f"{device.name} converged in {took * 1000:.0f} ms")
    return took


async def _subscribers(ctx: ScenarioContext, user: str) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        resp = await http.get(
            f"{ctx.config.server_url.rstrip('/')}/test/watch-subscribers", params={"user_id": user}
        )
    ctx.equal(resp.status_code, 200, "/test/watch-subscribers status")
    return int(resp.json()["subscriber_count"])


async def _wait_subscribers(ctx: ScenarioContext, user: str, count: int) -> None:
    async def probe() -> bool:
        return await _subscribers(ctx, user) == count

    await _until(f"{count} watch subscriber(s) for {user}", probe)


async def _pair(
    ctx: ScenarioContext, prefix: str, *, watch: bool = True, advertise: bool | None = None
) -> tuple[str, Device, Device]:
    user = ctx.user(prefix)
    watcher = await ctx.device("watcher", config=_config(watch), advertise_watch=advertise)
    writer = await ctx.device("writer", config=_config(False))
    for device in (watcher, writer):
        await device.sign_in(user, background=False)
    return user, watcher, writer


async def _write_and_sync(ctx: ScenarioContext, writer: Device, name: str) -> tuple[str, int]:
    row = await writer.create_user(name, "watch@example.com")
    report = await writer.client.sync()
    ctx.equal(report.push_outcome, PushOutcome.COMMITTED, "writer push outcome")
    assert report.status is not None
    return row, report.status.last_bundle_seq_seen


async def _server_has(ctx: ScenarioContext, user: str, row: str) -> None:
    ctx.check(await ctx.verifier.row_exists(user, "users", row), f"server row {row} exists")


@scenario("watch-peer-push", "Watch Peer Push", "Watch wake-up after a peer push", watch=True)
async def watch_peer_push(ctx: ScenarioContext) -> None:
    user, watcher, writer = await _pair(ctx, "watch-peer")
    await _start(watcher)
    await _wait_subscribers(ctx, user, 1)
    ctx.step("writer pushes; the watcher must pull within 5 s (fallback is 30 s)")
    row, seq = await _write_and_sync(ctx, writer, "Watch Peer Ada")
    took = await _converged(ctx, watcher, row, "Watch Peer Ada", seq)
    ctx.note(f"wake-up latency {took * 1000:.0f} ms")
    ctx.check(watcher.network.traffic.requests["watch"] >= 1, "watcher opened /sync/watch")
    await _server_has(ctx, user, row)


@scenario(
    "watch-server-originated",
    "Watch Server Write",
    "Watch wake-up after a ScopeManager server-side write",
    watch=True,
)
async def watch_server_originated(ctx: ScenarioContext) -> None:
    # Imported here: only this scenario needs the server package (a SyncService of our own).
    import sqlalchemy as sa

    from examples.litestar_server.app import build_service
    from examples.litestar_server.database import create_engine
    from examples.litestar_server.settings import Settings
    from oversync_sa.server.writes import BundleWriter

    user, watcher, _writer = await _pair(ctx, "watch-server")
    await _start(watcher)
    await _wait_subscribers(ctx, user, 1)
    settings = Settings(pool_max_conns=2, pool_min_conns=1)
    engine = create_engine(ctx.config.db_url, settings)
    service = build_service(engine, settings)
    row = str(uuid.uuid4())

    async def insert(writer: BundleWriter) -> None:
        await writer.connection.execute(
            sa.text(
                "INSERT INTO business.users (_sync_scope_id, id, name, email) "
                "VALUES (:scope, :id, 'Watch Server Ada', 'watch.server@example.com')"
            ),
            {"scope": user, "id": row},
        )

    try:
        await service.bootstrap()
        ctx.step("server-side write through ScopeManager.exec_write")
        result = await service.scope_manager().exec_write(
            user, insert, writer_id="mobile-flow-server-originated"
        )
    finally:
        await service.close()
        await engine.dispose()
    took = await _converged(ctx, watcher, row, "Watch Server Ada", result.bundle.bundle_seq)
    ctx.note(f"wake-up latency {took * 1000:.0f} ms (PostgreSQL NOTIFY relay)")
    await _server_has(ctx, user, row)


@scenario(
    "watch-reconnect-catch-up",
    "Watch Reconnect",
    "A watcher that missed a push catches up through after_bundle_seq",
    watch=True,
)
async def watch_reconnect_catch_up(ctx: ScenarioContext) -> None:
    user, watcher, writer = await _pair(ctx, "watch-reconnect")
    await _start(watcher)
    await _wait_subscribers(ctx, user, 1)
    await _stop(watcher)
    await _wait_subscribers(ctx, user, 0)
    ctx.step("writer pushes while the watcher is stopped; then the watcher restarts")
    row, seq = await _write_and_sync(ctx, writer, "Watch Reconnect Ada")
    ctx.check(not await watcher.has_user(row), "stopped watcher did not pull")
    await _start(watcher)
    await _converged(ctx, watcher, row, "Watch Reconnect Ada", seq)
    await _server_has(ctx, user, row)


@scenario(
    "watch-default-off",
    "Watch Default Off",
    "A client with watch off never opens /sync/watch, and still converges",
    watch=True,
)
async def watch_default_off(ctx: ScenarioContext) -> None:
    user, watcher, writer = await _pair(ctx, "watch-off", watch=False)
    await _start(watcher)
    row, seq = await _write_and_sync(ctx, writer, "Watch Default Off Ada")
    await _converged(ctx, watcher, row, "Watch Default Off Ada", seq)
    ctx.equal(watcher.network.traffic.requests["watch"], 0, "/sync/watch requests")
    await _server_has(ctx, user, row)


@scenario(
    "watch-server-unsupported-fallback",
    "Watch Unsupported",
    "Watch auto falls back to polling when capabilities lack bundle_change_watch",
    watch=True,
)
async def watch_server_unsupported(ctx: ScenarioContext) -> None:
    user, watcher, writer = await _pair(ctx, "watch-unsupported", advertise=False)
    await _start(watcher)
    row, seq = await _write_and_sync(ctx, writer, "Watch Fallback Ada")
    await _converged(ctx, watcher, row, "Watch Fallback Ada", seq)
    ctx.check(watcher.network.traffic.requests["capabilities"] >= 1, "capabilities were asked")
    ctx.equal(watcher.network.traffic.requests["watch"], 0, "/sync/watch requests")
    await _server_has(ctx, user, row)


@scenario(
    "watch-idle-cleanup",
    "Watch Idle Cleanup",
    "An idle watcher unregisters on the server when it stops",
    watch=True,
)
async def watch_idle_cleanup(ctx: ScenarioContext) -> None:
    user, watcher, _writer = await _pair(ctx, "watch-idle")
    await _start(watcher)
    await _wait_subscribers(ctx, user, 1)
    ctx.step("stop the idle watcher: the server must drop its subscription")
    await _stop(watcher)
    await _wait_subscribers(ctx, user, 0)


@scenario(
    "watch-many-clients-converge",
    "Watch Many Clients",
    "Many watchers of one scope converge after a peer push",
    watch=True,
)
async def watch_many_clients(ctx: ScenarioContext) -> None:
    user = ctx.user("watch-many")
    writer = await ctx.device("writer", config=_config(False))
    await writer.sign_in(user, background=False)
    watchers = []
    for i in range(1, ctx.sizes.watchers + 1):
        device = await ctx.device(f"watcher-{i:02d}", config=_config(True))
        await device.sign_in(user, background=False)
        watchers.append(device)
    for device in watchers:
        await _start(device)
    await _wait_subscribers(ctx, user, len(watchers))
    ctx.step(f"{len(watchers)} watchers subscribed; writer pushes")
    row, seq = await _write_and_sync(ctx, writer, "Watch Many Ada")
    took = await asyncio.gather(*(_converged(ctx, d, row, "Watch Many Ada", seq) for d in watchers))
    ctx.note(f"{len(watchers)} watchers converged, slowest {max(took) * 1000:.0f} ms")
    await _server_has(ctx, user, row)
    for device in watchers:
        await device.close()
    await _wait_subscribers(ctx, user, 0)
