"""Shared helpers of the watch tests: schema, services, writes, a Litestar app, a live server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
from litestar import Litestar, get, post
from litestar.connection import ASGIConnection
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.litestar import actor_dependencies, exception_handlers, json_response
from oversync_sa.litestar.watch_route import WatchAllowed, watch_route
from oversync_sa.server import BundleChangeWatchConfig, RegisteredTable, ServiceConfig, SyncService
from oversync_sa.server.finalize import CommittedBundle
from oversync_sa.server.watch import bundle_change_watch
from oversync_sa.server.writes import BundleWriter, ScopeManager

USER_HEADER = "X-Test-User"
SOURCE_HEADER = "Oversync-Source-ID"

_DDL = (
    "CREATE SCHEMA business",
    """CREATE TABLE business.notes (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, title TEXT NOT NULL,
        PRIMARY KEY (_sync_scope_id, id))""",
    "CREATE TABLE business.audit (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL)",
)


def watch_config(
    *, enabled: bool = True, heartbeat: timedelta = timedelta(seconds=5)
) -> ServiceConfig:
    return ServiceConfig(
        registered_tables=(RegisteredTable("business", "notes", "id"),),
        bundle_change_watch=BundleChangeWatchConfig(enabled=enabled, heartbeat_interval=heartbeat),
    )


async def make_service(engine: AsyncEngine, config: ServiceConfig | None = None) -> SyncService:
    """Create the business schema once per database and bootstrap a service on it."""
    async with engine.begin() as conn:
        if not await conn.scalar(sa.text("SELECT to_regnamespace('business') IS NOT NULL")):
            for ddl in _DDL:
                await conn.execute(sa.text(ddl))
    service = SyncService(engine, config or watch_config())
    await service.bootstrap()
    return service


async def write_note(
    service: SyncService, user_id: str, *, writer: str = "server", title: str = "n"
) -> CommittedBundle:
    """Commit one bundle (a new note) for ``user_id``; auto-initializes the scope."""

    async def insert(w: BundleWriter) -> None:
        await w.connection.execute(
            sa.text("INSERT INTO business.notes VALUES (:scope, :id, :title)"),
            {"scope": w.user_id, "id": uuid.uuid4(), "title": title},
        )

    result = await ScopeManager(service).exec_write(user_id, insert, writer_id=writer)
    return result.bundle


def _header_user(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    return connection.headers.get(USER_HEADER)


def build_app(
    service: SyncService, *, allowed: WatchAllowed | None = None, test_routes: bool = False
) -> Litestar:
    """The watch route behind a header "authentication", plus optional test helpers."""
    handlers: list[Any] = [watch_route(service, allowed=allowed)]
    if test_routes:
        handlers += _test_routes(service)
    return Litestar(
        route_handlers=handlers,
        dependencies=actor_dependencies(_header_user),
        exception_handlers=exception_handlers,
    )


def _test_routes(service: SyncService) -> list[Any]:
    watch = bundle_change_watch(service)

    @get("/test/watch-subscribers")
    async def subscribers(user_id: str) -> Any:
        count = await watch.subscriber_count(user_id)
        return json_response({"user_id": user_id, "subscriber_count": count})

    @get("/test/ready")
    async def ready() -> Any:
        return json_response({"listening": watch.listening}, 200 if watch.listening else 503)

    @post("/test/write")
    async def write(user_id: str, writer: str) -> Any:
        bundle = await write_note(service, user_id, writer=writer)
        return json_response({"bundle_seq": bundle.bundle_seq})

    return [subscribers, ready, write]


@asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[str]:
    """Run ``app`` on a real uvicorn in this event loop; yields its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def actor_headers(user: str | None = "alice", source: str | None = "dev-1") -> dict[str, str]:
    headers = {}
    if user is not None:
        headers[USER_HEADER] = user
    if source is not None:
        headers[SOURCE_HEADER] = source
    return headers


class SSEReader:
    """Reads a live SSE response frame by frame (a frame ends with a blank line)."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_raw()
        self._buffer = b""

    async def next_frame(self, within: float = 5.0) -> bytes:
        async with asyncio.timeout(within):
            while b"\n\n" not in self._buffer:
                self._buffer += await anext(self._chunks)
        frame, _, self._buffer = self._buffer.partition(b"\n\n")
        return frame + b"\n\n"

    async def until_end(self, within: float = 5.0) -> bytes:
        """Everything left, once the server ends the response."""
        async with asyncio.timeout(within):
            async for chunk in self._chunks:
                self._buffer += chunk
        rest, self._buffer = self._buffer, b""
        return rest

    async def next_event(self, within: float = 5.0) -> bytes:
        """The next non-heartbeat frame."""
        async with asyncio.timeout(within):
            while True:
                frame = await self.next_frame(within)
                if not frame.startswith(b":"):
                    return frame


async def wait_until(predicate: Any, within: float = 5.0) -> None:
    """Poll an async or sync predicate until it is true."""
    async with asyncio.timeout(within):
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.02)
