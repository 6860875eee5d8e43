"""``HEAD`` on the ``GET`` sync routes: authenticate first, then ``405 method_not_allowed``.

Go's router patterns ``GET /sync/...`` also match ``HEAD``, so in Go a ``HEAD`` request goes
through the auth and actor middleware (``401``/``400``) and only then reaches the handler's own
method check (JSON ``405``, "Only GET method is allowed", SERVER.md §8 and §10.3). Litestar
routes ``HEAD`` nowhere unless a handler declares it, and its routing ``405`` is raised before
any router middleware runs, so an unauthenticated ``HEAD`` would learn about the route without
a token. These handlers restore Go's order: they sit on the sync router (behind its JWT and
host middleware), resolve the same actor dependency as the ``GET`` they shadow, and refuse.

They are left out of the OpenAPI document: the contract has no ``HEAD`` operations.
"""

from __future__ import annotations

from typing import Final

from litestar import head
from litestar.handlers import HTTPRouteHandler

from oversync_sa.errors import MethodNotAllowedError
from oversync_sa.litestar.actor import ActorDependency, OptionalActorDependency

__all__ = ["HEAD_GUARDED_PATHS", "head_guard", "head_guards"]

#: The ``GET`` routes of the sync router and whether their ``GET`` needs an actor
#: (capabilities does not: a missing source header is not an error there).
HEAD_GUARDED_PATHS: Final[tuple[tuple[str, bool], ...]] = (
    ("/committed-bundles/{bundle_seq:str}/rows", True),
    ("/pull", True),
    ("/snapshot-sessions/{snapshot_id:str}", True),
    ("/capabilities", False),
)

_MESSAGE: Final = "Only GET method is allowed"


def head_guard(path: str, *, actor_required: bool = True) -> HTTPRouteHandler:
    """A ``HEAD`` handler at ``path`` that checks the actor like the ``GET`` there, then 405s."""
    if actor_required:

        @head(path, include_in_schema=False)
        async def refuse(actor: ActorDependency) -> None:
            raise MethodNotAllowedError(_MESSAGE)

        return refuse

    @head(path, include_in_schema=False)
    async def refuse_optional(optional_actor: OptionalActorDependency) -> None:
        raise MethodNotAllowedError(_MESSAGE)

    return refuse_optional


def head_guards(watch_path: str | None = "/watch") -> tuple[HTTPRouteHandler, ...]:
    """The guards of every ``GET`` sync route; ``watch_path=None`` leaves the watch out."""
    guarded = [*HEAD_GUARDED_PATHS, *(((watch_path, True),) if watch_path else ())]
    return tuple(head_guard(path, actor_required=needs) for path, needs in guarded)
