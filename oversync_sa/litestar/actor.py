"""The actor layer (SERVER.md §8): who is calling, as far as sync is concerned.

The library never authenticates. The host authenticates (for instance with
:mod:`oversync_sa.litestar.jwt` or Litestar's own auth middleware) and hands over a trusted user
id through a resolver; this module pairs it with the ``Oversync-Source-ID`` header. Handlers get
the result as Litestar dependencies, so Litestar's routing still answers a wrong method (405)
before any actor check, as the contract orders it; ``HEAD`` on a ``GET`` route is the exception
(:mod:`.head_routes`), since Go's ``GET`` patterns match it and authenticate it first.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from oversync_sa.errors import AuthenticationFailedError, InvalidRequestError
from oversync_sa.server.actor import Actor

__all__ = [
    "SOURCE_ID_HEADER",
    "Actor",
    "ActorDependency",
    "OptionalActorDependency",
    "UserIdResolver",
    "actor_dependencies",
    "scope_user_id",
    "sync_router_actor_dependencies",
]

_log = logging.getLogger(__name__)

SOURCE_ID_HEADER: Final = "Oversync-Source-ID"

#: Returns the authenticated user id of a connection, or ``None``/blank when there is none.
UserIdResolver = Callable[
    [ASGIConnection[Any, Any, Any, Any]], "str | Awaitable[str | None] | None"
]


#: Handler annotation for the required actor: ``async def pull(actor: ActorDependency)``.
ActorDependency = NamedDependency[Actor]
#: Handler annotation for capabilities: ``optional_actor: OptionalActorDependency``.
OptionalActorDependency = NamedDependency[Actor | None]
#: The router's ``sync`` dependency as :func:`sync_router_actor_dependencies` takes it (unused).
_Sync = NamedDependency[SkipValidation[Any]]


def scope_user_id(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The default resolver: ``scope["user"]`` when an auth middleware stored a string there."""
    user = connection.scope.get("user")
    return user if isinstance(user, str) else None


def actor_dependencies(resolve_user_id: UserIdResolver = scope_user_id) -> dict[str, Provide]:
    """Dependencies ``actor`` (required) and ``optional_actor`` for a router or app.

    ``actor`` raises ``401 authentication_failed`` without a user and ``400 invalid_request``
    without a source header, in that order. ``optional_actor`` (capabilities) yields ``None``
    instead of raising.
    """

    async def provide_actor(request: Request[Any, Any, Any]) -> Actor:
        return await _resolve_actor(request, resolve_user_id)

    async def provide_optional_actor(request: Request[Any, Any, Any]) -> Actor | None:
        try:
            return await _resolve_actor(request, resolve_user_id)
        except (AuthenticationFailedError, InvalidRequestError):
            return None

    return {
        "actor": Provide(provide_actor),
        "optional_actor": Provide(provide_optional_actor),
    }


def sync_router_actor_dependencies(resolve_user_id: UserIdResolver) -> dict[str, Provide]:
    """:func:`actor_dependencies` for a router that also provides ``sync``.

    :func:`~oversync_sa.litestar.plugin.create_sync_router` uses it; a host assembling its own
    router from the sync handlers and :func:`~oversync_sa.litestar.routes.sync_dependencies`
    should too.

    The providers take ``sync`` without using it. Litestar resolves the dependencies of one
    depth concurrently, in an anyio task group of one task each; with ``actor`` one level
    below ``sync`` every level holds a single dependency and is simply awaited (the task group
    cost about 4 % of a server worker's CPU under load).
    """

    async def provide_actor(request: Request[Any, Any, Any], sync: _Sync) -> Actor:
        return await _resolve_actor(request, resolve_user_id)

    async def provide_optional_actor(
        request: Request[Any, Any, Any], sync: _Sync
    ) -> Actor | None:
        try:
            return await _resolve_actor(request, resolve_user_id)
        except (AuthenticationFailedError, InvalidRequestError):
            return None

    return {
        "actor": Provide(provide_actor),
        "optional_actor": Provide(provide_optional_actor),
    }


async def _resolve_actor(
    connection: ASGIConnection[Any, Any, Any, Any], resolve_user_id: UserIdResolver
) -> Actor:
    try:
        found = resolve_user_id(connection)
        user_id = await found if inspect.isawaitable(found) else found
    except Exception:
        # The contract turns a failing resolver into 401; the cause is for the operator only.
        _log.warning("user id resolver failed", exc_info=True)
        user_id = None
    user_id = (user_id or "").strip()
    if not user_id:
        raise AuthenticationFailedError("authenticated user_id not found in request context")
    source_id = connection.headers.get(SOURCE_ID_HEADER, "").strip()
    if not source_id:
        raise InvalidRequestError(f"{SOURCE_ID_HEADER} header is required")
    return Actor(user_id=user_id, source_id=source_id)
