"""``/syncx/status`` and ``/syncx/health`` (SERVER.md §6.5).

Both endpoints compute the same object: lifecycle and in-flight count from the service, plus
retention and counter aggregates from one query. Status always answers 200 with it; health
answers 503 with the same body whenever the service is unhealthy (not running, or some user's
retained floor is ahead of its head). Neither is an in-flight operation, so both keep working
while the service drains.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from sqlalchemy import text

from oversync_sa.errors import HealthFailedError, StatusFailedError
from oversync_sa.server.capabilities import (
    PROTOCOL_VERSION,
    registered_table_names,
    server_features,
)
from oversync_sa.wire.models import HealthStatus, LifecycleState, StatusResponse

if TYPE_CHECKING:
    from oversync_sa.server.service import SyncService

__all__ = ["HEALTHY_STATUS", "UNHEALTHY_STATUS", "health", "status", "sync_status"]

_log = logging.getLogger("oversync_sa.server.status")

HEALTHY_STATUS: Final = 200
UNHEALTHY_STATUS: Final = 503

# pg_sequence_last_value() is NULL for a sequence never called (and for a missing one, through
# to_regclass), which is exactly "0 unless is_called".
_AGGREGATES_SQL: Final = text(
    "SELECT"
    " (SELECT count(*) FILTER (WHERE retained_bundle_floor > next_bundle_seq - 1)"
    "   FROM sync.user_state) AS floor_ahead,"
    " (SELECT coalesce(max(greatest(next_bundle_seq - 1, 0)), 0) FROM sync.user_state)"
    "   AS latest_max,"
    " (SELECT coalesce(min(retained_bundle_floor), 0) FROM sync.user_state) AS floor_min,"
    " (SELECT coalesce(max(retained_bundle_floor), 0) FROM sync.user_state) AS floor_max,"
    " (SELECT coalesce(min(greatest(next_bundle_seq - 1 - retained_bundle_floor, 0)), 0)"
    "   FROM sync.user_state) AS window_min,"
    " (SELECT coalesce(max(greatest(next_bundle_seq - 1 - retained_bundle_floor, 0)), 0)"
    "   FROM sync.user_state) AS window_max,"
    " coalesce(pg_sequence_last_value(to_regclass('sync.history_pruned_error_seq')), 0)"
    "   AS history_pruned,"
    " coalesce(pg_sequence_last_value(to_regclass('sync.accepted_push_replay_seq')), 0)"
    "   AS accepted_replay,"
    " coalesce(pg_sequence_last_value(to_regclass('sync.rejected_registered_write_seq')), 0)"
    "   AS rejected_writes,"
    " (SELECT count(*) FROM sync.bundle_log) AS bundle_count,"
    " (SELECT coalesce(sum(byte_count), 0) FROM sync.bundle_log) AS bundle_bytes"
)

_ZERO_AGGREGATES: Final = (0,) * 11


async def sync_status(service: SyncService) -> StatusResponse:
    """Compute the status object; database errors propagate unchanged.

    Before bootstrap the ``sync`` layout may not exist, so the aggregates are reported as 0
    rather than queried.
    """
    values: tuple[int, ...] = _ZERO_AGGREGATES
    if service.is_bootstrapped:
        async with service.engine.connect() as conn:
            row = (await conn.execute(_AGGREGATES_SQL)).one()
        values = tuple(int(v) for v in row)
    (
        floor_ahead, latest_max, floor_min, floor_max, window_min, window_max,
        history_pruned, accepted_replay, rejected_writes, bundle_count, bundle_bytes,
    ) = values
    lifecycle = LifecycleState(service.state.value)
    running = lifecycle is LifecycleState.RUNNING
    healthy = running and floor_ahead == 0
    config = service.config
    return StatusResponse(
        status=HealthStatus.HEALTHY if healthy else HealthStatus.UNHEALTHY,
        version=PROTOCOL_VERSION,
        app_name=config.app_name,
        lifecycle=lifecycle,
        accepting_operations=running,
        inflight_operations=service.in_flight,
        registered_tables=registered_table_names(config),
        features=server_features(config),
        user_state_retention_floor_ahead_count=floor_ahead,
        latest_bundle_seq_max=latest_max,
        retained_bundle_floor_min=floor_min,
        retained_bundle_floor_max=floor_max,
        retained_bundle_window_min=window_min,
        retained_bundle_window_max=window_max,
        history_pruned_error_count=history_pruned,
        accepted_push_replay_count=accepted_replay,
        rejected_registered_write_count=rejected_writes,
        committed_bundle_count=bundle_count,
        committed_bundle_bytes=bundle_bytes,
    )


async def status(service: SyncService) -> StatusResponse:
    """``GET /syncx/status``: always the object (even when unhealthy), or ``status_failed``."""
    try:
        return await sync_status(service)
    except Exception as exc:
        _log.exception("status query failed")
        raise StatusFailedError("Failed to compute sync status") from exc


async def health(service: SyncService) -> tuple[StatusResponse, int]:
    """``GET /syncx/health``: the object and 200 when healthy, 503 when not.

    A failing query raises ``health_failed`` instead.
    """
    try:
        body = await sync_status(service)
    except Exception as exc:
        _log.exception("health query failed")
        raise HealthFailedError("Failed to compute sync health") from exc
    code = HEALTHY_STATUS if body.status is HealthStatus.HEALTHY else UNHEALTHY_STATUS
    return body, code
