"""Mount the sync protocol on a Litestar app in one line.

``Litestar(plugins=[OversyncPlugin(service=service)])`` adds the ``/sync`` routes (behind the
actor layer, optionally behind JWT), the open ``/syncx`` status routes, the contract's exception
handlers, and a lifespan hook: the service is bootstrapped before the app serves and drained
(§7.6) when it stops. Hosts that assemble routers themselves use :func:`create_sync_router` and
:func:`create_status_router` instead.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

from litestar import Litestar, Router
from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from litestar.plugins import InitPluginProtocol
from litestar.types import ControllerRouterHandler, Middleware

from oversync_sa.litestar.actor import (
    Actor,
    UserIdResolver,
    scope_user_id,
    sync_router_actor_dependencies,
)
from oversync_sa.litestar.exceptions import exception_handlers
from oversync_sa.litestar.head_routes import head_guards
from oversync_sa.litestar.jwt import JWTAuthMiddleware, JWTConfig
from oversync_sa.litestar.openapi import (
    BEARER_AUTH,
    BEARER_AUTH_SCHEME,
    ContractSchemaPlugin,
    RawJSONSchemaPlugin,
)
from oversync_sa.litestar.routes import (
    STATUS_ROUTE_HANDLERS,
    SYNC_ROUTE_HANDLERS,
    SyncContext,
    sync_dependencies,
)
from oversync_sa.litestar.watch_route import watch_route
from oversync_sa.server.capabilities import WatchPolicy
from oversync_sa.server.service import SyncService
from oversync_sa.server.watch import bundle_change_watch

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "OversyncPlugin",
    "create_status_router",
    "create_sync_router",
]

_log = logging.getLogger(__name__)

#: Request body limit of the sync routes: a full 5000-row chunk with sizeable payloads fits.
DEFAULT_MAX_BODY_SIZE: Final = 64 * 1024 * 1024
#: How long shutdown waits for in-flight operations before giving up on the drain.
DEFAULT_SHUTDOWN_TIMEOUT: Final = 30.0


def _watch_handler(service: SyncService, policy: WatchPolicy | None) -> HTTPRouteHandler:
    """``GET /watch`` consulting the same per-actor policy as capabilities."""
    if policy is None:
        return watch_route(service, path="/watch")
    actor_policy = policy

    def allowed(_: ASGIConnection[Any, Any, Any, Any], actor: Actor) -> bool | Awaitable[bool]:
        return actor_policy(actor)

    return watch_route(service, allowed=allowed, path="/watch")


def create_sync_router(
    service: SyncService,
    *,
    resolve_user_id: UserIdResolver = scope_user_id,
    jwt: JWTConfig | None = None,
    watch_policy: WatchPolicy | None = None,
    watch_handlers: Sequence[ControllerRouterHandler] | None = None,
    middleware: Sequence[Middleware] = (),
    request_max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    path: str = "/sync",
) -> Router:
    """The authenticated ``/sync`` router.

    ``resolve_user_id`` reads the trusted user id the host's auth left on the connection (the
    default reads ``scope["user"]``, which :class:`JWTAuthMiddleware` sets). With ``jwt`` the
    router checks bearer tokens itself, before ``middleware``. ``watch_handlers`` replaces the
    default ``GET /watch`` handler; pass ``()`` to leave the watch out. ``watch_policy`` decides
    per actor whether the watch is offered (capabilities) and allowed (``403`` on the watch).
    """
    stack: list[Middleware] = [JWTAuthMiddleware(jwt)] if jwt is not None else []
    stack.extend(middleware)
    watch: tuple[ControllerRouterHandler, ...] = (
        (_watch_handler(service, watch_policy),)
        if watch_handlers is None
        else tuple(watch_handlers)
    )
    # HEAD on the GET routes authenticates before its 405, as in Go (see head_routes).
    heads = head_guards("/watch" if watch_handlers is None else None)
    return Router(
        path=path,
        route_handlers=[*SYNC_ROUTE_HANDLERS, *watch, *heads],
        # Documented only when the router checks bearer tokens itself; a host's own auth
        # documents its own scheme.
        security=[{BEARER_AUTH: []}] if jwt is not None else None,
        dependencies={
            **sync_router_actor_dependencies(resolve_user_id),
            **sync_dependencies(SyncContext(service=service, watch_policy=watch_policy)),
        },
        exception_handlers=exception_handlers,
        middleware=stack,
        request_max_body_size=request_max_body_size,
        include_in_schema=True,
    )


def create_status_router(service: SyncService, *, path: str = "/syncx") -> Router:
    """The unauthenticated ``/syncx`` router (health and status)."""
    return Router(
        path=path,
        route_handlers=list(STATUS_ROUTE_HANDLERS),
        dependencies=sync_dependencies(SyncContext(service=service)),
        exception_handlers=exception_handlers,
    )


def _with_bearer_scheme(config: OpenAPIConfig) -> OpenAPIConfig:
    """A copy of ``config`` whose components also define the contract's ``BearerAuth``.

    A copy, because the host's config may be Litestar's shared default instance.
    """
    extra = Components(security_schemes={BEARER_AUTH: BEARER_AUTH_SCHEME})
    existing = config.components if isinstance(config.components, list) else [config.components]
    updated = copy.copy(config)
    updated.components = [*existing, extra]
    return updated


class OversyncPlugin(InitPluginProtocol):
    """Mounts the sync protocol and ties the service's lifecycle to the app's lifespan.

    On startup the service is bootstrapped unless it already is (``bootstrap=False`` leaves it
    to the host). On shutdown :meth:`SyncService.close` drains in-flight operations, bounded by
    ``shutdown_timeout`` seconds; the engine stays open because the host owns it.
    The remaining keyword arguments are those of :func:`create_sync_router`.
    """

    def __init__(
        self,
        service: SyncService,
        *,
        resolve_user_id: UserIdResolver = scope_user_id,
        jwt: JWTConfig | None = None,
        watch_policy: WatchPolicy | None = None,
        watch_handlers: Sequence[ControllerRouterHandler] | None = None,
        middleware: Sequence[Middleware] = (),
        request_max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        bootstrap: bool = True,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        self.service = service
        self._resolve_user_id = resolve_user_id
        self._jwt = jwt
        self._watch_policy = watch_policy
        self._watch_handlers = watch_handlers
        self._middleware = tuple(middleware)
        self._max_body = request_max_body_size
        self._bootstrap = bootstrap
        self._shutdown_timeout = shutdown_timeout

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.extend(
            [
                create_sync_router(
                    self.service,
                    resolve_user_id=self._resolve_user_id,
                    jwt=self._jwt,
                    watch_policy=self._watch_policy,
                    watch_handlers=self._watch_handlers,
                    middleware=self._middleware,
                    request_max_body_size=self._max_body,
                ),
                create_status_router(self.service),
            ]
        )
        # App level too: routing errors (405 on a /sync path) never reach a router's handlers.
        # The host's own handlers win for the exception types it already maps.
        for exc_type, handler in exception_handlers.items():
            app_config.exception_handlers.setdefault(exc_type, handler)
        # Right after this plugin: ahead of Litestar's default schema plugins (which sit at the
        # end of the list) and without disturbing the iteration over the plugins before it.
        position = app_config.plugins.index(self) + 1 if self in app_config.plugins else 0
        app_config.plugins[position:position] = [ContractSchemaPlugin(), RawJSONSchemaPlugin()]
        if self._jwt is not None and app_config.openapi_config is not None:
            app_config.openapi_config = _with_bearer_scheme(app_config.openapi_config)
        app_config.lifespan.append(self.lifespan)
        return app_config

    @asynccontextmanager
    async def lifespan(self, _: Litestar) -> AsyncIterator[None]:
        """Bootstrap before serving; drain and close the service when the app stops."""
        if self._bootstrap and not self.service.is_bootstrapped:
            await self.service.bootstrap()
            _log.info("sync service bootstrapped (%s)", self.service.config.app_name)
        watch = bundle_change_watch(self.service)
        if watch.enabled:
            await watch.start()
        try:
            yield
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting sync operations and wait for the running ones; idempotent.

        Servers may call this as soon as they receive a stop signal, so new requests get
        ``503 service_unavailable`` while earlier ones finish; the lifespan calls it again.
        """
        # Ending the watch streams first lets the server's own connection drain finish.
        await bundle_change_watch(self.service).close()
        try:
            async with asyncio.timeout(self._shutdown_timeout):
                await self.service.close()
        except TimeoutError:
            _log.warning(
                "sync service still had %d operation(s) in flight after %.1fs",
                self.service.in_flight,
                self._shutdown_timeout,
            )

