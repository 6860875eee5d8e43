"""Helpers for testing applications built on oversync-sa (and for our own test suite).

Crash points: run a client or server process with ``OVERSYNC_CRASH_POINT``
(:data:`ENV_CRASH_POINT`) set to one of :data:`CRASH_POINTS` (``name`` or ``name@N``) and it
kills itself with ``SIGKILL`` at that durable boundary, so a test can restart it and check that
nothing was lost or duplicated.
See :mod:`oversync_sa._crashpoints`.
"""

from oversync_sa._crashpoints import CRASH_POINTS, ENV_CRASH_POINT
from oversync_sa.testing.faults import (
    FaultAction,
    FaultEvent,
    FaultInjector,
    FaultRule,
    FaultTransport,
    RequestRecord,
    delay,
    drop_request,
    drop_response,
    duplicate,
    fail_status,
    hold,
)
from oversync_sa.testing.postgres import (
    ENV_DATABASE_URL,
    LocalCluster,
    PostgresNotFoundError,
    PostgresServer,
    asyncpg_dsn,
    find_bin_dir,
    find_postgres,
    sqlalchemy_url,
    temporary_database,
)

__all__ = [
    "CRASH_POINTS",
    "ENV_CRASH_POINT",
    "ENV_DATABASE_URL",
    "FaultAction",
    "FaultEvent",
    "FaultInjector",
    "FaultRule",
    "FaultTransport",
    "LocalCluster",
    "PostgresNotFoundError",
    "PostgresServer",
    "RequestRecord",
    "asyncpg_dsn",
    "delay",
    "drop_request",
    "drop_response",
    "duplicate",
    "fail_status",
    "find_bin_dir",
    "find_postgres",
    "hold",
    "sqlalchemy_url",
    "temporary_database",
]
