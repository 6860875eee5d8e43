"""Connect lifecycle and initialization leases (SERVER.md §4).

``POST /sync/connect`` decides who establishes server authority for a scope. A source with
local pending rows that connects first to an ``UNINITIALIZED`` scope gets an exclusive,
time-limited *initialization lease* and must then seed the server with one push carrying the
lease's ``initialization_id``; every step of that seed push re-verifies and extends the lease
through :func:`require_active_lease`.

All lease times use the database clock (see :mod:`.scope`), so lease decisions agree across
server processes.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.errors import (
    ConnectFailedError,
    ConnectInvalidError,
    InitializationExpiredError,
    InitializationStaleError,
)
from oversync_sa.server.scope import (
    ScopeRecord,
    ScopeState,
    lock_scope,
    transition_to_initialized,
    transition_to_initializing,
)
from oversync_sa.server.upload_support import unexpected_as, upload_transaction
from oversync_sa.wire.models import ConnectRequest, ConnectResolution, ConnectResponse
from oversync_sa.wire.timefmt import format_timestamp

if TYPE_CHECKING:
    from oversync_sa.server.service import SyncService

__all__ = ["check_active_lease", "connect", "extend_lease", "require_active_lease"]

_log = logging.getLogger("oversync_sa.server.connect")

_EXTEND_LEASE_SQL: Final = text(
    "UPDATE sync.scope_state SET lease_expires_at = now() + make_interval(secs => :ttl) "
    "WHERE user_pk = :user_pk AND state_code = 1 RETURNING lease_expires_at"
)
# Whole seconds until the lease ends, truncated, at least 1 (§4.2 retry_later).
_RETRY_AFTER_SQL: Final = text(
    "SELECT GREATEST(floor(extract(epoch FROM (CAST(:until AS timestamptz) - now()))), 1)::bigint"
)


async def extend_lease(conn: AsyncConnection, scope: ScopeRecord, ttl: timedelta) -> ScopeRecord:
    """Move the locked ``INITIALIZING`` scope's lease to ``now() + ttl``; the id is kept."""
    new_expiry = (
        await conn.execute(
            _EXTEND_LEASE_SQL, {"user_pk": scope.user_pk, "ttl": ttl.total_seconds()}
        )
    ).scalar_one()
    return replace(scope, lease_expires_at=new_expiry, lease_expired=False)


async def check_active_lease(
    conn: AsyncConnection,
    scope: ScopeRecord,
    source_id: str,
    initialization_id: str,
    ttl: timedelta,
) -> ScopeRecord:
    """Verify, on an already locked scope, that ``source_id`` holds lease ``initialization_id``.

    The checks run in Go's order; ids are compared as exact strings, so only the lowercase
    dashed form of the right id matches and blank values never do. On success the lease is
    extended to ``now() + ttl``.
    """
    if scope.state is not ScopeState.INITIALIZING:
        raise InitializationStaleError("scope is no longer initializing")
    if scope.lease_expired:  # practically unreachable: lock_scope already expired it
        raise InitializationExpiredError("initialization lease has expired")
    if not source_id or scope.initializer_source_id != source_id:
        raise InitializationStaleError("source does not own the active initialization lease")
    if not initialization_id or scope.initialization_id != initialization_id:
        raise InitializationStaleError(
            "initialization_id does not match the active initialization lease"
        )
    return await extend_lease(conn, scope, ttl)


async def require_active_lease(
    conn: AsyncConnection,
    user_id: str,
    source_id: str,
    initialization_id: str,
    ttl: timedelta,
) -> ScopeRecord:
    """Lock the scope (expiring a passed lease), then :func:`check_active_lease` (§4.3).

    Used by every step of a seed push: chunk upload and commit re-verify the lease stored on
    the session, which is why an expired lease surfaces there as ``initialization_stale``.
    """
    scope = await lock_scope(conn, user_id)
    return await check_active_lease(conn, scope, source_id, initialization_id, ttl)


def _lease_answer(scope: ScopeRecord) -> ConnectResponse:
    assert scope.initialization_id is not None
    assert scope.lease_expires_at is not None
    return ConnectResponse(
        resolution=ConnectResolution.INITIALIZE_LOCAL,
        initialization_id=scope.initialization_id,
        lease_expires_at=format_timestamp(scope.lease_expires_at),
    )


async def _resolve(
    conn: AsyncConnection, service: SyncService, user_id: str, source_id: str, pending: bool
) -> ConnectResponse:
    """The §4.2 decision table on the locked scope row."""
    ttl = service.config.initialization_lease_ttl
    scope = await lock_scope(conn, user_id)
    if scope.state is ScopeState.INITIALIZED:
        return ConnectResponse(resolution=ConnectResolution.REMOTE_AUTHORITATIVE)
    if scope.state is ScopeState.UNINITIALIZED:
        if pending:
            return _lease_answer(await transition_to_initializing(conn, scope, source_id, ttl))
        await transition_to_initialized(conn, scope, source_id)
        return ConnectResponse(resolution=ConnectResolution.INITIALIZE_EMPTY)
    if scope.initializer_source_id == source_id:
        if pending:
            return _lease_answer(await extend_lease(conn, scope, ttl))
        await transition_to_initialized(conn, scope, source_id)
        return ConnectResponse(resolution=ConnectResolution.INITIALIZE_EMPTY)
    assert scope.lease_expires_at is not None
    retry_after = (
        await conn.execute(_RETRY_AFTER_SQL, {"until": scope.lease_expires_at})
    ).scalar_one()
    return ConnectResponse(
        resolution=ConnectResolution.RETRY_LATER,
        lease_expires_at=format_timestamp(scope.lease_expires_at),
        retry_after_seconds=int(retry_after),
    )


async def connect(
    service: SyncService, user_id: str, source_id: str, request: ConnectRequest | None
) -> ConnectResponse:
    """Resolve the actor's first-contact question for its scope (``POST /sync/connect``).

    The actor's ``source_id`` is the only source considered. Runs one transaction under the
    per-user lock, never retried, so two concurrent first connects with pending rows get exactly
    one ``initialize_local`` and one ``retry_later``.

    Raises :class:`ConnectInvalidError` for a missing request, ``ServiceUnavailableError`` while
    shutting down and :class:`ConnectFailedError` for anything unexpected.
    """
    if request is None:
        raise ConnectInvalidError("connect request is required")
    pending = request.has_local_pending_rows
    with unexpected_as(ConnectFailedError, "connect"):
        async with service.operation():
            response = await upload_transaction(
                service,
                user_id,
                lambda conn: _resolve(conn, service, user_id, source_id, pending),
                retry=False,
            )
    _log.debug("connect user=%s source=%s -> %s", user_id, source_id, response.resolution)
    return response
