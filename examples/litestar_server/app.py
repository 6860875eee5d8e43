"""The reference server's Litestar app: sync routes, demo sign-in, test helpers, CORS (§10).

Sync routes and their behaviour come from :class:`~oversync_sa.litestar.plugin.OversyncPlugin`;
this module adds only what go-oversync's example server adds around its library handlers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import asyncpg
import msgspec
import sqlalchemy as sa
from litestar import Litestar, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException
from litestar.middleware import ASGIMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import SkipValidation
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.business_models import REGISTER_ORDER
from examples.litestar_server.database import (
    create_business_schema,
    drop_sync_and_business_schemas,
)
from examples.litestar_server.settings import APP_NAME, Settings
from oversync_sa.litestar import (
    DecodeError,
    JWTConfig,
    decode_request,
    encode_json,
    issue_token,
    json_response,
    metrics_route,
)
from oversync_sa.litestar.exceptions import exception_handlers as sync_exception_handlers
from oversync_sa.litestar.plugin import OversyncPlugin
from oversync_sa.server import (
    BundleChangeWatchConfig,
    RegisteredTable,
    ServiceConfig,
    SyncService,
)
from oversync_sa.server.watch import bundle_change_watch

if TYPE_CHECKING:
    from oversync_sa.metrics.prometheus import PrometheusObserver

__all__ = [
    "TOKEN_TTL_SECONDS",
    "BrowserCORSMiddleware",
    "ExampleServer",
    "add_cors_headers",
    "bearer_openapi_config",
    "build_service",
    "create_app",
    "database_error_text",
    "router_method_not_allowed",
    "router_not_found",
]

_log = logging.getLogger(__name__)

TOKEN_TTL_SECONDS: Final = 300
_CORS_HEADERS: Final = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-headers", b"Authorization, Content-Type, Oversync-Source-ID"),
    (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
    (b"access-control-max-age", b"600"),
)
# Go writes these answers before setting a content type, so net/http sniffs the JSON as text.
# Litestar appends "; charset=utf-8" to text types itself; naming it here would send it twice.
_HELPER_ERROR_MEDIA_TYPE: Final = "text/plain"
# What Go's http.Error adds to the router's own plain-text answers.
_NOSNIFF: Final = {"X-Content-Type-Options": "nosniff"}


def build_service(engine: AsyncEngine, settings: Settings) -> SyncService:
    """The example's sync service: the eight business tables, watch on, Go's app name.

    With ``settings.metrics`` it reports to a :class:`PrometheusObserver` on a registry of its
    own (one per server, so tests can build several), stage timings included.
    """
    tables = tuple(
        RegisteredTable(settings.business_schema, table, "id") for table in REGISTER_ORDER
    )
    observer = _prometheus_observer() if settings.metrics else None
    config = ServiceConfig(
        registered_tables=tables,
        app_name=APP_NAME,
        max_supported_schema_version=1,
        log_stage_timings=settings.log_stage_timings,
        bundle_change_watch=BundleChangeWatchConfig(enabled=True),
        observer=observer,
        stage_metrics=None if observer is None else observer.stage_recorder,
    )
    return SyncService(engine, config)


def _prometheus_observer() -> PrometheusObserver:
    # Deferred: prometheus-client is the optional [metrics] extra, needed only when enabled.
    from prometheus_client import CollectorRegistry

    from oversync_sa.metrics.prometheus import PrometheusObserver

    return PrometheusObserver(CollectorRegistry())


@dataclass
class ExampleServer:
    """One server instance: its settings, engine and service, and the plugin serving it."""

    settings: Settings
    engine: AsyncEngine
    service: SyncService
    plugin: OversyncPlugin = field(init=False)

    def __post_init__(self) -> None:
        self.plugin = OversyncPlugin(
            self.service,
            jwt=JWTConfig(key=self.settings.jwt_secret, plain_text_errors=True),
        )

    @classmethod
    def create(cls, engine: AsyncEngine, settings: Settings) -> ExampleServer:
        return cls(settings=settings, engine=engine, service=build_service(engine, settings))

    async def reset(self) -> None:
        """Drop and recreate every table, then bootstrap again (``POST /test/reset``)."""
        schema = self.settings.business_schema
        await drop_sync_and_business_schemas(self.engine, schema)
        await create_business_schema(self.engine, schema)
        await self.service.bootstrap()


ServerDependency = NamedDependency[SkipValidation[ExampleServer]]


# ----------------------------------------------------------------------------- helper routes


class _SigninRequest(msgspec.Struct, kw_only=True):
    user: str = ""
    password: str = ""


class _SigninResponse(msgspec.Struct, kw_only=True):
    token: str
    expires_in: int
    user: str


class _RetentionFloorRequest(msgspec.Struct, kw_only=True):
    user_id: str = ""
    retained_bundle_floor: int = 0


def _helper_error(status: int, code: str, message: str) -> Response[bytes]:
    return Response(
        content=encode_json({"error": code, "message": message}),
        status_code=status,
        media_type=_HELPER_ERROR_MEDIA_TYPE,
    )


async def _decode_helper_body(request: Request[Any, Any, Any], target: type[Any]) -> Any:
    try:
        return decode_request(await request.body(), target)
    except DecodeError:
        return None


@post("/dummy-signin", status_code=200, tags=["example"])
async def dummy_signin(
    request: Request[Any, Any, Any], server: ServerDependency
) -> Response[bytes]:
    """A demo token for any user name; the password is not checked."""
    body = await _decode_helper_body(request, _SigninRequest)
    if body is None:
        return _helper_error(400, "invalid_request", "invalid JSON")
    if not body.user:
        return _helper_error(400, "invalid_request", "user required")
    try:
        token = issue_token(body.user, server.settings.jwt_secret, ttl_seconds=TOKEN_TTL_SECONDS)
    except Exception as exc:
        _log.exception("token signing failed")
        return _helper_error(500, "token_error", str(exc))
    _log.info("issued a demo token for %s", body.user)
    return json_response(
        _SigninResponse(token=token, expires_in=TOKEN_TTL_SECONDS, user=body.user)
    )


@post("/test/reset", status_code=200, tags=["test"])
async def test_reset(server: ServerDependency) -> Response[bytes]:
    """Drop the ``sync`` and business schemas, recreate the tables and bootstrap again."""
    try:
        await server.reset()
    except Exception as exc:
        _log.exception("failed to reset the example database")
        return _helper_error(500, "reset_failed", str(exc))
    return json_response({"schema": server.settings.business_schema, "status": "ok"})


_SET_FLOOR_SQL: Final = sa.text(
    "UPDATE sync.user_state SET retained_bundle_floor = :floor WHERE user_id = :user_id"
)


@post("/test/retention-floor", status_code=200, tags=["test"])
async def test_retention_floor(
    request: Request[Any, Any, Any], server: ServerDependency
) -> Response[bytes]:
    """Raise (or lower) one user's retained floor, to provoke ``history_pruned`` answers."""
    body = await _decode_helper_body(request, _RetentionFloorRequest)
    if body is None:
        return _helper_error(400, "invalid_request", "invalid JSON")
    if not body.user_id.strip():
        return _helper_error(400, "invalid_request", "user_id required")
    if body.retained_bundle_floor < 0:
        return _helper_error(
            400, "invalid_request", "retained_bundle_floor must be non-negative"
        )
    try:
        async with server.engine.begin() as conn:
            result = await conn.execute(
                _SET_FLOOR_SQL, {"floor": body.retained_bundle_floor, "user_id": body.user_id}
            )
    except Exception as exc:
        # e.g. the CHECK constraint refusing a floor above the user's head.
        _log.warning("retained floor update failed for %s: %s", body.user_id, exc)
        return _helper_error(500, "retention_floor_update_failed", database_error_text(exc))
    if result.rowcount == 0:
        return _helper_error(
            404, "user_state_not_found", "no sync user_state row exists for user_id"
        )
    return json_response(
        {
            "retained_bundle_floor": body.retained_bundle_floor,
            "status": "ok",
            "user_id": body.user_id,
        }
    )


def database_error_text(exc: BaseException) -> str:
    """A PostgreSQL error the way pgx prints it (``ERROR: <message> (SQLSTATE <code>)``).

    SQLAlchemy's own text adds the statement, its parameters and a help link; the Go example
    sends pgx's short form. Anything that is not a server error keeps its plain text.
    """
    cause: BaseException | None = exc
    while cause is not None:
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and isinstance(cause, asyncpg.PostgresError):
            severity = getattr(cause, "severity", None) or "ERROR"
            return f"{severity}: {cause.args[0] if cause.args else cause} (SQLSTATE {sqlstate})"
        cause = cause.__cause__ or getattr(cause, "orig", None)
        if cause is exc:
            break
    return str(exc)


_USER_PK_SQL: Final = sa.text("SELECT user_pk FROM sync.user_state WHERE user_id = :user_id")


@get("/test/watch-subscribers", tags=["test"])
async def test_watch_subscribers(
    request: Request[Any, Any, Any], server: ServerDependency
) -> Response[bytes]:
    """How many watch streams this process holds for a user (0 for an unknown user)."""
    user_id = request.query_params.get("user_id", "").strip()
    if not user_id:
        return _helper_error(400, "invalid_request", "user_id required")
    try:
        async with server.engine.connect() as conn:
            user_pk = await conn.scalar(_USER_PK_SQL, {"user_id": user_id})
    except Exception as exc:
        _log.exception("failed to inspect watch subscribers")
        return _helper_error(500, "watch_subscribers_failed", str(exc))
    hub = bundle_change_watch(server.service).hub
    count = 0 if user_pk is None else hub.subscriber_count(int(user_pk))
    return json_response(
        {"process_local_only": True, "subscriber_count": count, "user_id": user_id}
    )


# ---------------------------------------------------------------------------------- CORS


class BrowserCORSMiddleware(ASGIMiddleware):
    """The example's permissive CORS: ``OPTIONS`` on a known path is always 204.

    Browsers in the demo call the server from any origin, so there is nothing to negotiate. The
    CORS headers themselves come from :func:`add_cors_headers`, which also sees the answers
    routing gives before any middleware runs (unknown path, wrong method), as Go's wrapper does.
    """

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope.get("method") == "OPTIONS":
            await _send_preflight(send)
            return
        await next_app(scope, receive, send)


async def _send_preflight(send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def add_cors_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the CORS headers on every HTTP answer of the app."""
    if message["type"] == "http.response.start":
        message["headers"] = [*message.get("headers", ()), *_CORS_HEADERS]


# ----------------------------------------------------------------------- routing answers


def _plain_text(status: int, text: str, headers: dict[str, str]) -> Response[bytes]:
    return Response(
        content=text.encode("utf-8"),
        status_code=status,
        media_type="text/plain",
        headers={**headers, **_NOSNIFF},
    )


def _go_allow(allow: str) -> str:
    """Go's ``Allow`` list: the route's methods, ``HEAD`` beside ``GET``, no ``OPTIONS``."""
    methods = [m.strip().upper() for m in allow.split(",") if m.strip()]
    methods = [m for m in methods if m not in {"OPTIONS", "HEAD"}]
    if "GET" in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")
    return ", ".join(methods)


def router_not_found(request: Request[Any, Any, Any], exc: NotFoundException) -> Response[Any]:
    """An unknown path: Go's mux answers ``404 page not found`` as plain text.

    ``OPTIONS`` is 204 everywhere, since Go's CORS wrapper runs before its router.
    """
    if request.method == "OPTIONS":
        return Response(content=b"", status_code=204)
    return _plain_text(404, "404 page not found\n", {})


def router_method_not_allowed(
    request: Request[Any, Any, Any], exc: MethodNotAllowedException
) -> Response[Any]:
    """A known path with the wrong method: Go's mux answers 405 as plain text, with ``Allow``.

    The one exception is ``HEAD`` on a ``GET`` route: Go's ``GET`` patterns match ``HEAD`` too,
    so the library's own JSON ``method_not_allowed`` answers it (SERVER.md §10.3).
    """
    if request.method == "OPTIONS":
        return Response(content=b"", status_code=204)
    headers = dict(exc.headers or {})
    allow = headers.get("allow", headers.get("Allow", ""))
    if request.method == "HEAD" and "GET" in allow.upper().split(", "):
        return sync_exception_handlers[HTTPException](request, exc)
    return _plain_text(405, "Method Not Allowed\n", {"Allow": _go_allow(allow)})


# ------------------------------------------------------------------------------------ app


def create_app(server: ExampleServer) -> Litestar:
    """The Litestar app of ``server``; its lifespan creates the tables, then bootstraps."""

    @asynccontextmanager
    async def business_schema(_: Litestar) -> AsyncIterator[None]:
        # Runs before the plugin's lifespan: bootstrap needs the business tables.
        await create_business_schema(server.engine, server.settings.business_schema)
        yield

    def provide_server() -> ExampleServer:
        return server

    helpers: list[Any] = [dummy_signin, test_reset, test_retention_floor, test_watch_subscribers]
    observer = server.service.config.observer
    if server.settings.metrics and observer is not None:
        from oversync_sa.metrics.prometheus import PrometheusObserver

        assert isinstance(observer, PrometheusObserver)  # build_service made it
        helpers.append(metrics_route(observer.registry, service=server.service))
    return Litestar(
        route_handlers=helpers,
        dependencies={"server": Provide(provide_server, use_cache=True, sync_to_thread=False)},
        plugins=[server.plugin],
        middleware=[BrowserCORSMiddleware()],
        before_send=[add_cors_headers],
        exception_handlers={
            NotFoundException: router_not_found,
            MethodNotAllowedException: router_method_not_allowed,
        },
        lifespan=[business_schema],
        openapi_config=bearer_openapi_config(
            "go-oversync Two-Way Sync API (oversync-sa reference server)"
        ),
    )


def bearer_openapi_config(title: str) -> OpenAPIConfig:
    """OpenAPI settings of an example app: ``title``, version 1.0.0, JWT bearer auth."""
    return OpenAPIConfig(
        title=title,
        version="1.0.0",
        components=Components(
            security_schemes={
                "BearerAuth": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
            }
        ),
    )

