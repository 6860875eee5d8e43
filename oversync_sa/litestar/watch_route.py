"""``GET /sync/watch``: the bundle-change wake-up stream as Server-Sent Events (SERVER.md §7.4).

Checks run in the contract's order: Litestar's routing answers a wrong method (405), the
``actor`` dependency a missing user (401) or source header (400), then the optional per-actor
policy (403, only while the watch is enabled), the ``after_bundle_seq`` query (400) and finally
the subscription (503 disabled or shutting down, 409 scope state, 500 otherwise). Only then is the
200 stream started, so every refusal is an ordinary JSON error response.

The stream is a small ASGI app rather than a Litestar ``Stream``: it must notice a client that
goes away while nothing is being written (to release the subscription at once, not at the next
heartbeat) and it must release the subscription on every exit path, including a ``HEAD`` request
or a response that is never started.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from litestar import Request, get
from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from oversync_sa.errors import BundleChangeWatchFailedError, BundleChangeWatchForbiddenError
from oversync_sa.litestar.actor import Actor, ActorDependency
from oversync_sa.litestar.exceptions import failure_opt
from oversync_sa.litestar.openapi import SyncOperation
from oversync_sa.litestar.query import parse_watch_after
from oversync_sa.litestar.responses import SSE_HEADERS, SSE_HEARTBEAT, SSE_MEDIA_TYPE, sse_event
from oversync_sa.litestar.routes import WATCH_RESPONSES
from oversync_sa.server.service import SyncService
from oversync_sa.server.watch import BundleChangeSubscription, bundle_change_watch

__all__ = ["WATCH_PATH", "WatchAllowed", "watch_route"]

_log = logging.getLogger("oversync_sa.litestar.watch")

WATCH_PATH: Final = "/sync/watch"

#: Per-actor policy hook (Go's ``BundleChangeWatchAllowed``): ``False`` answers ``403
#: bundle_change_watch_forbidden``. The capabilities route should consult the same hook for
#: ``features.bundle_change_watch``.
WatchAllowed = Callable[[ASGIConnection[Any, Any, Any, Any], Actor], bool | Awaitable[bool]]

_FORBIDDEN_MESSAGE: Final = "Bundle change watch is not enabled for this client"
_FAILED_MESSAGE: Final = "Failed to subscribe bundle change watch"
_ENCODED_HEADERS: Final = (
    (b"content-type", SSE_MEDIA_TYPE.encode("latin-1")),
    *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SSE_HEADERS.items()),
)


def watch_route(
    service: SyncService, *, allowed: WatchAllowed | None = None, path: str = WATCH_PATH
) -> HTTPRouteHandler:
    """The ``GET /sync/watch`` handler for ``service``.

    Needs the ``actor`` dependency of :func:`oversync_sa.litestar.actor.actor_dependencies` and
    :data:`oversync_sa.litestar.exceptions.exception_handlers` on the app. ``allowed`` is the
    optional per-actor policy; without it every actor may watch.
    """
    heartbeat = service.config.bundle_change_watch.heartbeat_interval.total_seconds()
    watch = bundle_change_watch(service)

    @get(
        path,
        opt=failure_opt(BundleChangeWatchFailedError, _FAILED_MESSAGE),
        operation_id="watchBundleChanges",
        operation_class=SyncOperation,
        summary="Watch for committed bundle wakeups",
        tags=["sync"],
        responses=WATCH_RESPONSES,
    )
    async def sync_watch(request: Request[Any, Any, Any], actor: ActorDependency) -> ASGIApp:
        if watch.enabled and allowed is not None and not await _allows(allowed, request, actor):
            raise BundleChangeWatchForbiddenError(_FORBIDDEN_MESSAGE)
        after = parse_watch_after(request.query_params)
        subscription = await service.watch(actor, after)
        return WatchStream(subscription, heartbeat)

    return sync_watch


async def _allows(allowed: WatchAllowed, request: Request[Any, Any, Any], actor: Actor) -> bool:
    verdict = allowed(request, actor)
    return bool(await verdict) if inspect.isawaitable(verdict) else bool(verdict)


class WatchStream:
    """The ASGI app writing one subscription as SSE until either side goes away.

    Frames: ``event: bundle`` with the event JSON (source fields omitted when empty) for each
    wake-up, and a ``: heartbeat`` comment every ``heartbeat_seconds`` (a fixed cadence, like
    Go's ticker, whether or not events were sent in between).
    """

    def __init__(self, subscription: BundleChangeSubscription, heartbeat_seconds: float) -> None:
        self._subscription = subscription
        self._heartbeat = heartbeat_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _ENCODED_HEADERS})
            if scope.get("method") == "HEAD":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await self._stream(receive, send)
        finally:
            self._subscription.close()

    async def _stream(self, receive: Receive, send: Send) -> None:
        writer = asyncio.create_task(self._write_frames(send))
        disconnect = asyncio.create_task(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((writer, disconnect), return_when=asyncio.FIRST_COMPLETED)
        finally:
            client_gone = disconnect.done()
            for task in (writer, disconnect):
                task.cancel()
            outcome, _ = await asyncio.gather(writer, disconnect, return_exceptions=True)
        if isinstance(outcome, Exception):
            # The client is gone or the server refused the write; nobody is left to tell.
            _log.debug("watch stream ended by a write failure: %s", outcome)
        elif not client_gone:
            # The subscription was closed (service shutdown): end the response cleanly.
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _write_frames(self, send: Send) -> None:
        async for frame in self._frames():
            await send({"type": "http.response.body", "body": frame, "more_body": True})

    async def _frames(self) -> AsyncIterator[bytes]:
        """Event and heartbeat frames until the subscription closes."""
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time() + self._heartbeat
        subscription = self._subscription
        while True:
            event = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_heartbeat):
                    event = await subscription.receive()
            if subscription.closed:
                return
            if event is not None:
                yield sse_event("bundle", event)
                continue
            yield SSE_HEARTBEAT
            next_heartbeat = max(next_heartbeat + self._heartbeat, loop.time())


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
