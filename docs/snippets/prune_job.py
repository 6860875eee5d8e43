"""A retention job for cron or a scheduler: prune every user's history to the window."""

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import ServiceConfig
from oversync_sa.server.retention import PruneProgress, prune

log = logging.getLogger("retention")


async def nightly_prune(engine: AsyncEngine, config: ServiceConfig) -> PruneProgress:
    # Short transactions, rows held by live writers skipped: safe beside running servers.
    totals = await prune(engine, config, users_per_transaction=200)
    log.info("pruned %d bundles of %d users", totals.bundles_deleted, totals.floors_advanced)
    return totals
