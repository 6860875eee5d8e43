"""``GET /metrics``: the Prometheus text exposition of a registry, as a Litestar route handler.

``Litestar(route_handlers=[metrics_route(observer.registry, service=service)], ...)``. The
route is not part of the sync contract, so it stays out of the OpenAPI schema and carries no
authentication: mount it on an internal port, or add the host's own guard. Needs the
``metrics`` extra (``prometheus-client``), imported only when this function is called.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler

from oversync_sa.server.service import SyncService

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["metrics_route"]

_log: Final = logging.getLogger("oversync_sa.litestar.metrics")


def metrics_route(
    registry: CollectorRegistry | None = None,
    *,
    service: SyncService | None = None,
    path: str = "/metrics",
) -> HTTPRouteHandler:
    """A handler serving ``registry`` (default: ``prometheus_client.REGISTRY``) at ``path``.

    With ``service`` every scrape first refreshes the retained-floor lag metrics
    (:meth:`SyncService.measure_retention_lag`, one aggregate query) when the service is
    bootstrapped, so they are as fresh as the scrape. If that query fails the scrape still
    answers, with the previous lag values, and the failure is logged.
    """
    # Deferred: the extra is optional, and this import's error names it.
    from oversync_sa.metrics.prometheus import exposition

    @get(path, include_in_schema=False)
    async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        if service is not None and service.is_bootstrapped:
            try:
                await service.measure_retention_lag()
            except Exception:
                _log.warning("retention lag refresh failed; serving the last values", exc_info=True)
        body, content_type = exposition(registry, request.headers.get("accept", ""))
        # Given as a header, not media_type: Litestar would append a second charset to it.
        return Response(content=body, headers={"content-type": content_type}, status_code=200)

    return metrics
