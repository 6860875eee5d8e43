"""observability.py: the notes server with Prometheus metrics, and a device reporting counters."""

import logging

from litestar import Litestar
from notes_models import Base
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.client import SyncClient, SyncReport
from oversync_sa.litestar import JWTConfig, metrics_route
from oversync_sa.litestar.plugin import OversyncPlugin
from oversync_sa.metrics.prometheus import PrometheusObserver
from oversync_sa.server import ServiceConfig, SyncService

log = logging.getLogger("notes.sync")


# --8<-- [start:server]
def create_observed_app(engine: AsyncEngine, jwt_secret: str) -> Litestar:
    # Omit the registry to use prometheus_client's global REGISTRY instead.
    observer = PrometheusObserver(CollectorRegistry())
    config = ServiceConfig.from_models(
        Base,
        schema="business",
        observer=observer,  # operations, commits, conflicts, watch subscribers
        stage_metrics=observer.stage_recorder,  # per-stage timings (pull)
    )
    service = SyncService(engine, config)
    return Litestar(
        # /metrics is not part of the sync contract and has no auth: keep it internal.
        route_handlers=[metrics_route(observer.registry, service=service)],
        plugins=[OversyncPlugin(service, jwt=JWTConfig(key=jwt_secret))],
    )


# --8<-- [end:server]


# --8<-- [start:client]
async def sync_and_report(client: SyncClient) -> SyncReport:
    report = await client.sync()
    status = await client.sync_status()
    counters = status.counters  # since this SyncClient was created
    log.info(
        "synced: %d pushes, %d pulls, %d rebuilds, %d conflicts resolved, %d changes queued",
        counters.pushes, counters.pulls, counters.rebuilds, counters.conflicts_resolved,
        status.dirty_queue_depth,
    )
    return report


# --8<-- [end:client]
