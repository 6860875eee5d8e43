"""The sample server's Litestar app: the sync routes, ``/dummy-signin``, dev logging and CORS.

What go-oversync's ``samplesync_server`` adds around its library handlers, on top of
:class:`~oversync_sa.litestar.plugin.OversyncPlugin`:

* ``POST /dummy-signin``: a 180-second token for any user name (the password is not checked);
* bearer-token auth on every ``/sync/*`` route, with Go's plain-text ``401`` answers;
* request logging of the push, pull and connect routes, for watching the app while developing;
* permissive CORS and Go's router answers for unknown paths and methods, both taken from the
  reference server (:mod:`examples.litestar_server.app`), whose Go counterparts are identical.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from litestar import Litestar, Request, Response, post
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.middleware import ASGIMiddleware
from litestar.params import SkipValidation
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.litestar_server.app import (
    BrowserCORSMiddleware,
    add_cors_headers,
    bearer_openapi_config,
    router_method_not_allowed,
    router_not_found,
)
from examples.samplesync_server.models import SampleSyncBase, server_metadata
from examples.samplesync_server.settings import APP_NAME, TOKEN_TTL_SECONDS, Settings
from oversync_sa.litestar import (
    DecodeError,
    JWTConfig,
    decode_request,
    issue_token,
    json_response,
)
from oversync_sa.litestar.plugin import OversyncPlugin
from oversync_sa.server import BundleChangeWatchConfig, ServiceConfig, SyncService

__all__ = [
    "RequestLogMiddleware",
    "SampleSyncServer",
    "build_service",
    "create_app",
    "create_tables",
]

_log = logging.getLogger(__name__)


def build_service(engine: AsyncEngine, settings: Settings) -> SyncService:
    """The sample's sync service: its three tables, watch on, schema version 1."""
    config = ServiceConfig.from_models(
        SampleSyncBase,
        schema=settings.business_schema,
        app_name=APP_NAME,
        max_supported_schema_version=1,
        log_stage_timings=settings.log_stage_timings,
        bundle_change_watch=BundleChangeWatchConfig(enabled=True),
    )
    return SyncService(engine, config)


async def create_tables(engine: AsyncEngine, schema: str) -> None:
    """Create the schema, tables and indexes that are missing, in one transaction."""
    async with engine.begin() as conn:
        await conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
        await conn.run_sync(server_metadata(schema).create_all)
    _log.info("initialized the %s schema and tables", schema)


@dataclass
class SampleSyncServer:
    """One server instance: its settings, engine and service, and the plugin serving them."""

    settings: Settings
    engine: AsyncEngine
    service: SyncService
    plugin: OversyncPlugin = field(init=False)

    def __post_init__(self) -> None:
        # plain_text_errors: the sample's auth middleware answers with Go's http.Error texts,
        # which the KMP app's error handling expects.
        self.plugin = OversyncPlugin(
            self.service,
            jwt=JWTConfig(key=self.settings.jwt_secret, plain_text_errors=True),
        )

    @classmethod
    def create(cls, engine: AsyncEngine, settings: Settings) -> SampleSyncServer:
        return cls(settings=settings, engine=engine, service=build_service(engine, settings))


ServerDependency = NamedDependency[SkipValidation[SampleSyncServer]]


# ----------------------------------------------------------------------------- sign-in


class _SigninRequest(msgspec.Struct, kw_only=True):
    # Go declares ``struct{ User, Password string }`` without tags; its decoder matches member
    # names case-insensitively, and so does decode_request.
    user: str = ""
    password: str = ""


class _SigninResponse(msgspec.Struct, kw_only=True):
    token: str
    expires_in: int
    user: str


def _signin_error(status: int, code: str) -> Response[bytes]:
    # Unlike the reference server, the sample sets the JSON content type before writing its
    # errors, and they carry only the code.
    return json_response({"error": code}, status)


@post("/dummy-signin", status_code=200, tags=["sample"])
async def dummy_signin(
    request: Request[Any, Any, Any], server: ServerDependency
) -> Response[bytes]:
    """A demo token for any user name; the password is not checked."""
    try:
        body = decode_request(await request.body(), _SigninRequest)
    except DecodeError:
        return _signin_error(400, "invalid_request")
    if not body.user:
        return _signin_error(400, "user_required")
    try:
        token = issue_token(body.user, server.settings.jwt_secret, ttl_seconds=TOKEN_TTL_SECONDS)
    except Exception:
        _log.exception("token signing failed")
        return _signin_error(500, "token_error")
    return json_response(
        _SigninResponse(token=token, expires_in=TOKEN_TTL_SECONDS, user=body.user)
    )


# ----------------------------------------------------------------------------- dev logging

#: Routes the Go sample wraps in its logging middleware; watch, snapshots and capabilities are
#: left out there (the watch must stream unbuffered) and here. ``GET`` patterns match ``HEAD``.
_LOGGED_ROUTES: Final = tuple(
    (methods, re.compile(pattern))
    for methods, pattern in (
        ({"POST"}, r"/sync/connect"),
        ({"POST"}, r"/sync/push-sessions"),
        ({"POST"}, r"/sync/push-sessions/[^/]+/chunks"),
        ({"POST"}, r"/sync/push-sessions/[^/]+/commit"),
        ({"DELETE"}, r"/sync/push-sessions/[^/]+"),
        ({"GET", "HEAD"}, r"/sync/committed-bundles/[^/]+/rows"),
        ({"GET", "HEAD"}, r"/sync/pull"),
    )
)
#: Request bodies at or above this size are not logged (nor are bodies of unknown length).
_MAX_LOGGED_BODY: Final = 100_000


def _is_logged(method: str, path: str) -> bool:
    return any(method in methods and rx.fullmatch(path) for methods, rx in _LOGGED_ROUTES)


class RequestLogMiddleware(ASGIMiddleware):
    """Logs each push, pull and connect request with its body, then a push or pull summary.

    A development aid, as in the Go sample: it writes request bodies (row payloads included) to
    the log at INFO. It sits outside the auth check so rejected requests are logged too.
    """

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        method, path = str(scope.get("method", "")), scope["path"]
        if not _is_logged(method, path):
            await next_app(scope, receive, send)
            return
        started = time.monotonic()
        body = b""
        if method == "POST" and 0 < _content_length(scope) < _MAX_LOGGED_BODY:
            body, receive = await _buffer_body(receive)
        _log.info(
            "HTTP Request method=%s path=%s query=%s body=%s",
            method, path, scope.get("query_string", b"").decode("latin-1"),
            body.decode("utf-8", "replace"),
        )
        status = 200
        answered = False
        # Only the pull summary reads the answer; other answers are not kept.
        pull_body = bytearray() if path == "/sync/pull" else None

        async def capture(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and message.get("body"):
                answered = True
                if pull_body is not None:
                    pull_body.extend(message["body"])
            await send(message)

        await next_app(scope, receive, capture)
        # Set by the JWT middleware inside. Go reads the actor from the outer request and so
        # always logs an empty user; the user is the point of these lines, so it is fixed here.
        user = scope.get("user")
        user = user if isinstance(user, str) else ""
        elapsed_ms = (time.monotonic() - started) * 1000
        if pull_body:
            _log_pull_summary(bytes(pull_body), user, status, elapsed_ms)
        elif answered and path.startswith("/sync/push-sessions"):
            _log.info(
                "Push session summary user=%s path=%s status=%d duration_ms=%.1f",
                user, path, status, elapsed_ms,
            )


def _log_pull_summary(body: bytes, user: str, status: int, elapsed_ms: float) -> None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return
    if not isinstance(parsed, dict):
        return
    bundles = parsed.get("bundles")
    _log.info(
        "Pull summary user=%s status=%d bundles=%d has_more=%s stable_bundle_seq=%s "
        "duration_ms=%.1f",
        user, status, len(bundles) if isinstance(bundles, list) else 0,
        parsed.get("has_more"), parsed.get("stable_bundle_seq"), elapsed_ms,
    )


def _content_length(scope: Scope) -> int:
    for key, value in scope["headers"]:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return -1


async def _buffer_body(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body, and a ``receive`` that hands it to the app again."""
    chunks: list[bytes] = []
    # A message that ended the body early (the client went away); the app must see it too.
    interrupted: Any = None
    while True:
        message = await receive()
        if message["type"] != "http.request":
            interrupted = message
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Any:
        nonlocal replayed, interrupted
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": interrupted is not None}
        if interrupted is not None:
            message, interrupted = interrupted, None
            return message
        return await receive()

    return body, replay


# ------------------------------------------------------------------------------------ app


def create_app(server: SampleSyncServer) -> Litestar:
    """The Litestar app of ``server``; its lifespan creates the tables, then bootstraps."""

    @asynccontextmanager
    async def application_tables(_: Litestar) -> AsyncIterator[None]:
        # Listed before the plugin's lifespan runs: bootstrap inspects the business tables.
        await create_tables(server.engine, server.settings.business_schema)
        yield

    def provide_server() -> SampleSyncServer:
        return server

    return Litestar(
        route_handlers=[dummy_signin],
        dependencies={"server": Provide(provide_server, use_cache=True, sync_to_thread=False)},
        plugins=[server.plugin],
        # CORS first: a preflight never reaches the logger.
        middleware=[BrowserCORSMiddleware(), RequestLogMiddleware()],
        before_send=[add_cors_headers],
        exception_handlers={
            NotFoundException: router_not_found,
            MethodNotAllowedException: router_method_not_allowed,
        },
        lifespan=[application_tables],
        openapi_config=bearer_openapi_config("oversync-sa samplesync server"),
    )
