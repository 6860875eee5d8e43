"""The one table that turns exceptions into sync responses.

* any :class:`~oversync_sa.errors.WireError` -> its status and ``to_body()``;
* Litestar's 405 on a ``/sync/*`` path -> JSON ``method_not_allowed`` (the ``Allow`` header is
  kept); elsewhere Litestar's default answer;
* Litestar's ``ValidationException`` on a ``/sync/*`` path -> ``400 invalid_request`` without
  Litestar's internal detail;
* anything unexpected -> the route's ``*_failed`` 500 error (declared with :func:`failure_opt`),
  logged with its traceback, its text never sent.

Hand :data:`exception_handlers` to the ``Litestar`` app (not only the router: routing errors
such as 405 are raised before any router-level handler applies).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from litestar import Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, ValidationException
from litestar.exceptions.responses import create_exception_response
from litestar.types import ExceptionHandlersMap

from oversync_sa.errors import InvalidRequestError, MethodNotAllowedError, WireError
from oversync_sa.litestar.responses import error_response, json_response

__all__ = [
    "FAILURE_OPT_KEY",
    "SYNC_PATH_PREFIX",
    "exception_handlers",
    "failure_opt",
]

_log = logging.getLogger(__name__)

#: Route ``opt`` key holding the error an unexpected exception becomes on that route.
FAILURE_OPT_KEY: Final = "oversync_failure"
#: Paths whose framework errors are answered in the contract's shape.
SYNC_PATH_PREFIX: Final = "/sync/"

# Not a contract code: only reached by a route that did not declare its failure.
_FALLBACK_FAILURE: Final = {"error": "internal_error", "message": "Internal server error"}
_IGNORED_METHODS: Final = frozenset({"HEAD", "OPTIONS"})


def failure_opt(error_type: type[WireError], message: str) -> dict[str, Any]:
    """Route ``opt`` naming its 500 answer, e.g. ``failure_opt(PullFailedError, "Failed to
    process pull")``."""
    return {FAILURE_OPT_KEY: (error_type, message)}


def _wire_error(_: Request[Any, Any, Any], exc: WireError) -> Response[bytes]:
    return error_response(exc)


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if not request.url.path.startswith(SYNC_PATH_PREFIX):
        return create_exception_response(request, exc)
    if isinstance(exc, MethodNotAllowedException):
        return _method_not_allowed(exc)
    if isinstance(exc, ValidationException):
        return error_response(InvalidRequestError("invalid request parameters"))
    return create_exception_response(request, exc)


def _method_not_allowed(exc: MethodNotAllowedException) -> Response[bytes]:
    headers = dict(exc.headers or {})
    allow = headers.get("allow", headers.get("Allow", ""))
    methods = [m.strip() for m in allow.split(",") if m.strip() not in _IGNORED_METHODS]
    message = f"Only {methods[0]} method is allowed" if len(methods) == 1 else "method not allowed"
    return error_response(
        MethodNotAllowedError(message), headers={"Allow": allow} if allow else None
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    failure = _declared_failure(request)
    _log.error(
        "unhandled error on %s %s", request.method, request.url.path, exc_info=exc
    )
    if failure is None:
        return json_response(_FALLBACK_FAILURE, 500)
    error_type, message = failure
    return error_response(error_type(message))


def _declared_failure(request: Request[Any, Any, Any]) -> tuple[type[WireError], str] | None:
    handler = request.scope.get("route_handler")
    opt = getattr(handler, "opt", None) or {}
    failure = opt.get(FAILURE_OPT_KEY)
    if (
        isinstance(failure, tuple)
        and len(failure) == 2
        and isinstance(failure[0], type)
        and issubclass(failure[0], WireError)
    ):
        return failure[0], str(failure[1])
    return None


#: Ready for ``Litestar(exception_handlers=...)``.
exception_handlers: ExceptionHandlersMap = {
    WireError: _wire_error,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
