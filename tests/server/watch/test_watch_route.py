"""``GET /sync/watch`` over a live uvicorn: headers, framing, heartbeats, cleanup, error codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.litestar.actor import Actor
from oversync_sa.server import SyncService
from oversync_sa.server.scope import lock_scope, transition_to_initializing
from oversync_sa.server.watch import BundleChangeWatch, bundle_change_watch
from tests.server.watch._support import (
    SSEReader,
    actor_headers,
    build_app,
    make_service,
    serve,
    wait_until,
    watch_config,
    write_note,
)


@pytest.fixture
async def fast_service(pg_engine: AsyncEngine) -> AsyncIterator[SyncService]:
    """Watch enabled with a 200 ms heartbeat, listener running."""
    service = await make_service(pg_engine, watch_config(heartbeat=timedelta(milliseconds=200)))
    watch = bundle_change_watch(service)
    await watch.start()
    async with asyncio.timeout(10):
        await watch.wait_listening()
    try:
        yield service
    finally:
        await watch.close()


@pytest.fixture
async def base_url(fast_service: SyncService) -> AsyncIterator[str]:
    async with serve(build_app(fast_service)) as url:
        yield url


async def get_error(url: str, path: str, headers: dict[str, str], method: str = "GET") -> Any:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.request(method, path, headers=headers)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


async def test_stream_headers_catch_up_events_and_heartbeats(
    fast_service: SyncService, base_url: str
) -> None:
    await write_note(fast_service, "alice")
    watch = bundle_change_watch(fast_service)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
        client.stream("GET", "/sync/watch?after_bundle_seq=0", headers=actor_headers()) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"
        sse = SSEReader(resp)
        assert await sse.next_frame() == b'event: bundle\ndata: {"bundle_seq":1}\n\n'
        await write_note(fast_service, "alice", writer="device-a")
        assert await sse.next_event() == (
            b'event: bundle\ndata: {"bundle_seq":2,"source_id":"device-a",'
            b'"source_bundle_id":1}\n\n'
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await sse.next_frame() == b": heartbeat\n\n"
        assert await sse.next_frame() == b": heartbeat\n\n"
        assert loop.time() - started < 1.0  # 200 ms cadence, not the 25 s default
        assert await watch.subscriber_count("alice") == 1
    # The client went away without the server writing anything: cleanup is immediate.
    await wait_until(lambda: _no_subscribers(watch))


def _no_subscribers(watch: BundleChangeWatch) -> bool:
    return sum(watch.hub.subscriber_count(pk) for pk in watch.hub.active_user_pks()) == 0


async def test_disconnect_between_heartbeats_releases_the_subscriber(
    pg_engine: AsyncEngine,
) -> None:
    service = await make_service(pg_engine, watch_config(heartbeat=timedelta(seconds=60)))
    await write_note(service, "alice")
    watch = bundle_change_watch(service)
    async with serve(build_app(service)) as url:
        async with (
            httpx.AsyncClient(base_url=url) as client,
            client.stream("GET", "/sync/watch?after_bundle_seq=1", headers=actor_headers()) as r,
        ):
            assert r.status_code == 200
            await wait_until(lambda: watch.subscriber_count("alice"))
        await wait_until(lambda: _no_subscribers(watch), within=2)
    await watch.close()


async def test_service_shutdown_ends_the_stream_cleanly(
    fast_service: SyncService, base_url: str
) -> None:
    await write_note(fast_service, "alice")
    async with (
        httpx.AsyncClient(base_url=base_url) as client,
        client.stream("GET", "/sync/watch?after_bundle_seq=1", headers=actor_headers()) as resp,
    ):
        sse = SSEReader(resp)
        assert await sse.next_frame() == b": heartbeat\n\n"  # the stream is live
        await bundle_change_watch(fast_service).close()
        assert await sse.until_end() in (b"", b": heartbeat\n\n")


async def test_actor_and_query_errors(fast_service: SyncService, base_url: str) -> None:
    await write_note(fast_service, "alice")
    assert await get_error(base_url, "/sync/watch", actor_headers(user=None)) == (
        401,
        {"error": "authentication_failed",
         "message": "authenticated user_id not found in request context"},
    )
    status, body = await get_error(base_url, "/sync/watch", actor_headers(source=None))
    assert (status, body["error"]) == (400, "invalid_request")
    for bad, message in (
        ("abc", "after_bundle_seq must be an integer"),
        ("+", "after_bundle_seq must be an integer"),
        ("%201", "after_bundle_seq must be an integer"),
        ("-1", "after_bundle_seq must be >= 0"),
    ):
        assert await get_error(
            base_url, f"/sync/watch?after_bundle_seq={bad}", actor_headers()
        ) == (400, {"error": "invalid_request", "message": message})
    status, body = await get_error(base_url, "/sync/watch", actor_headers(), method="POST")
    assert (status, body["error"]) == (405, "method_not_allowed")


async def test_scope_state_errors(fast_service: SyncService, base_url: str) -> None:
    status, body = await get_error(base_url, "/sync/watch", actor_headers("nobody"))
    assert (status, body["error"]) == (409, "scope_uninitialized")
    async with fast_service.engine.begin() as conn:
        scope = await lock_scope(conn, "leased")
        await transition_to_initializing(conn, scope, "dev", timedelta(minutes=5))
    status, body = await get_error(base_url, "/sync/watch", actor_headers("leased"))
    assert (status, body["error"]) == (409, "scope_initializing")


async def test_policy_hook_forbids_before_query_parsing(fast_service: SyncService) -> None:
    seen: list[Actor] = []

    async def only_trusted(_: object, actor: Actor) -> bool:
        seen.append(actor)
        return actor.source_id == "trusted"

    await write_note(fast_service, "alice")
    async with serve(build_app(fast_service, allowed=only_trusted)) as url:
        assert await get_error(url, "/sync/watch?after_bundle_seq=-5", actor_headers()) == (
            403,
            {"error": "bundle_change_watch_forbidden",
             "message": "Bundle change watch is not enabled for this client"},
        )
        async with (
            httpx.AsyncClient(base_url=url) as client,
            client.stream(
                "GET", "/sync/watch", headers=actor_headers(source="trusted")
            ) as resp,
        ):
            assert resp.status_code == 200
    assert seen == [Actor("alice", "dev-1"), Actor("alice", "trusted")]


async def test_disabled_watch_is_503_and_skips_the_policy(pg_engine: AsyncEngine) -> None:
    service = await make_service(pg_engine, watch_config(enabled=False))
    await write_note(service, "alice")
    async with serve(build_app(service, allowed=lambda _c, _a: False)) as url:
        assert await get_error(url, "/sync/watch", actor_headers()) == (
            503,
            {"error": "bundle_change_watch_disabled",
             "message": "Bundle change watch is disabled"},
        )


async def test_shutdown_and_unexpected_failures(pg_engine: AsyncEngine) -> None:
    service = await make_service(pg_engine)
    await write_note(service, "alice")
    async with serve(build_app(service)) as url:
        async with pg_engine.begin() as conn:
            await conn.exec_driver_sql("ALTER TABLE sync.user_state RENAME TO user_state_gone")
        assert await get_error(url, "/sync/watch", actor_headers()) == (
            500,
            {"error": "bundle_change_watch_failed",
             "message": "Failed to subscribe bundle change watch"},
        )
        async with pg_engine.begin() as conn:
            await conn.exec_driver_sql("ALTER TABLE sync.user_state_gone RENAME TO user_state")

        release = asyncio.Event()

        async def hold() -> None:
            async with service.operation():
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        closing = asyncio.create_task(service.close())
        await asyncio.sleep(0)
        assert await get_error(url, "/sync/watch", actor_headers()) == (
            503,
            {"error": "service_unavailable", "message": "Sync service is shutting down"},
        )
        release.set()
        await asyncio.gather(holder, closing)
        # After close the rejection is generic: the route's 500.
        status, body = await get_error(url, "/sync/watch", actor_headers())
        assert (status, body["error"]) == (500, "bundle_change_watch_failed")
