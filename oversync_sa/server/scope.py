"""Scope (user) state: ensure, lock, lease expiry and transitions (SERVER.md §4.1).

Every lease comparison and every lease timestamp uses the *database* clock (``now()``, the
transaction start time), so several server processes with skewed clocks agree on whether a lease
is still live.

Writers call :func:`lock_scope` (ensure rows, ``FOR UPDATE``, expire a stale lease). Read paths
(pull, snapshot create, watch) call :func:`read_scope`, which writes nothing and reports an
``INITIALIZING`` scope whose lease is already in the past as ``UNINITIALIZED``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.errors import ScopeInitializingError, ScopeUninitializedError
from oversync_sa.server import fastsql
from oversync_sa.wire.timefmt import format_timestamp

__all__ = [
    "ScopeRecord",
    "ScopeState",
    "ensure_scope",
    "expire_lease_if_needed",
    "lock_scope",
    "read_scope",
    "require_initialized",
    "transition_to_initialized",
    "transition_to_initializing",
]


class ScopeState(enum.IntEnum):
    """``scope_state.state_code``."""

    UNINITIALIZED = 0
    INITIALIZING = 1
    INITIALIZED = 2


@dataclass(frozen=True, slots=True)
class ScopeRecord:
    """One scope's ``scope_state`` joined to its ``user_state`` row.

    ``lease_expired`` is only meaningful for ``INITIALIZING``: whether the lease was at or before
    the database's ``now()`` when the row was read.
    """

    user_pk: int
    user_id: str
    state: ScopeState
    initializer_source_id: str | None
    initialization_id: str | None
    lease_expires_at: datetime | None
    lease_expired: bool
    initialized_at: datetime | None
    initialized_by_source_id: str | None
    next_bundle_seq: int
    retained_bundle_floor: int

    @property
    def head_bundle_seq(self) -> int:
        """The newest committed ``bundle_seq`` (0 when nothing was committed)."""
        return self.next_bundle_seq - 1


_SCOPE_COLUMNS: Final = """
    us.user_pk, us.user_id, ss.state_code, ss.initializer_source_id,
    ss.initialization_id::text AS initialization_id, ss.lease_expires_at,
    COALESCE(ss.lease_expires_at <= now(), false) AS lease_expired,
    ss.initialized_at, ss.initialized_by_source_id,
    us.next_bundle_seq, us.retained_bundle_floor
"""

_ENSURE_USER_SQL: Final = text(
    "INSERT INTO sync.user_state (user_id, next_bundle_seq, retained_bundle_floor) "
    "VALUES (:user_id, 1, 0) ON CONFLICT (user_id) DO NOTHING"
)
_ENSURE_SCOPE_SQL: Final = text(
    "INSERT INTO sync.scope_state (user_pk, state_code) "
    "SELECT user_pk, 0 FROM sync.user_state WHERE user_id = :user_id "
    "ON CONFLICT (user_pk) DO NOTHING"
)
_LOCK_SQL: Final = text(
    f"SELECT {_SCOPE_COLUMNS} FROM sync.scope_state ss "
    "JOIN sync.user_state us ON us.user_pk = ss.user_pk "
    "WHERE us.user_id = :user_id FOR UPDATE"
)
_READ_SQL: Final = text(
    f"SELECT {_SCOPE_COLUMNS} FROM sync.scope_state ss "
    "JOIN sync.user_state us ON us.user_pk = ss.user_pk "
    "WHERE us.user_id = :user_id"
)
_EXPIRE_SQL: Final = text(
    "UPDATE sync.scope_state SET state_code = 0, initializer_source_id = NULL, "
    "initialization_id = NULL, lease_expires_at = NULL "
    "WHERE user_pk = :user_pk AND state_code = 1 AND lease_expires_at <= now()"
)
_TO_INITIALIZED_SQL: Final = text(
    "UPDATE sync.scope_state SET state_code = 2, initializer_source_id = NULL, "
    "initialization_id = NULL, lease_expires_at = NULL, initialized_at = now(), "
    "initialized_by_source_id = :source_id "
    "WHERE user_pk = :user_pk RETURNING initialized_at"
)
_TO_INITIALIZING_SQL: Final = text(
    "UPDATE sync.scope_state SET state_code = 1, initializer_source_id = :source_id, "
    "initialization_id = gen_random_uuid(), "
    "lease_expires_at = now() + make_interval(secs => :ttl), "
    "initialized_at = NULL, initialized_by_source_id = NULL "
    "WHERE user_pk = :user_pk RETURNING initialization_id::text, lease_expires_at"
)


def _record(row: Any) -> ScopeRecord:
    m = fastsql.mapping(row)
    return ScopeRecord(
        user_pk=int(m["user_pk"]),
        user_id=str(m["user_id"]),
        state=ScopeState(int(m["state_code"])),
        initializer_source_id=m["initializer_source_id"],
        initialization_id=m["initialization_id"],
        lease_expires_at=m["lease_expires_at"],
        lease_expired=bool(m["lease_expired"]),
        initialized_at=m["initialized_at"],
        initialized_by_source_id=m["initialized_by_source_id"],
        next_bundle_seq=int(m["next_bundle_seq"]),
        retained_bundle_floor=int(m["retained_bundle_floor"]),
    )


async def ensure_scope(conn: AsyncConnection, user_id: str) -> None:
    """Create the ``user_state`` and ``UNINITIALIZED`` ``scope_state`` rows if missing.

    ``ON CONFLICT DO NOTHING`` burns identity values on repeats; gaps in ``user_pk`` are normal.
    """
    await conn.execute(_ENSURE_USER_SQL, {"user_id": user_id})
    await conn.execute(_ENSURE_SCOPE_SQL, {"user_id": user_id})


async def expire_lease_if_needed(conn: AsyncConnection, scope: ScopeRecord) -> ScopeRecord:
    """Reset an ``INITIALIZING`` scope whose lease has passed to ``UNINITIALIZED``.

    The caller must hold the scope row lock (see :func:`lock_scope`).
    """
    if scope.state is not ScopeState.INITIALIZING or not scope.lease_expired:
        return scope
    await conn.execute(_EXPIRE_SQL, {"user_pk": scope.user_pk})
    return replace(
        scope,
        state=ScopeState.UNINITIALIZED,
        initializer_source_id=None,
        initialization_id=None,
        lease_expires_at=None,
        lease_expired=False,
    )


async def lock_scope(conn: AsyncConnection, user_id: str) -> ScopeRecord:
    """Ensure the scope rows, lock them ``FOR UPDATE`` and expire a stale lease.

    The row lock (on both ``scope_state`` and ``user_state``) is held until the transaction
    ends, so the returned record stays true for the caller's transaction.
    """
    # Rows that exist need no ensure: two round trips less on every write after the first.
    row = (await fastsql.execute(conn, _LOCK_SQL, {"user_id": user_id})).one_or_none()
    if row is None:
        await ensure_scope(conn, user_id)
        row = (await fastsql.execute(conn, _LOCK_SQL, {"user_id": user_id})).one()
    return await expire_lease_if_needed(conn, _record(row))


async def read_scope(conn: AsyncConnection, user_id: str) -> ScopeRecord | None:
    """The scope as a read path sees it, without writing or locking; ``None`` if unknown.

    An ``INITIALIZING`` row whose lease is in the past is reported as ``UNINITIALIZED`` with the
    lease fields cleared, exactly what the next writer would turn it into.
    """
    row = (await fastsql.execute(conn, _READ_SQL, {"user_id": user_id})).one_or_none()
    if row is None:
        return None
    scope = _record(row)
    if scope.state is ScopeState.INITIALIZING and scope.lease_expired:
        return replace(
            scope,
            state=ScopeState.UNINITIALIZED,
            initializer_source_id=None,
            initialization_id=None,
            lease_expires_at=None,
            lease_expired=False,
        )
    return scope


def require_initialized(scope: ScopeRecord | None, user_id: str) -> ScopeRecord:
    """Return ``scope`` if it is ``INITIALIZED``, else raise the matching wire error."""
    if scope is not None and scope.state is ScopeState.INITIALIZED:
        return scope
    if scope is not None and scope.state is ScopeState.INITIALIZING and not scope.lease_expired:
        # Go formats the lease end as RFC 3339 UTC with ``Z``, like the wire timestamps.
        lease_end = scope.lease_expires_at
        until = f" until {format_timestamp(lease_end)}" if lease_end is not None else ""
        raise ScopeInitializingError(f"sync scope for user {user_id} is initializing{until}")
    raise ScopeUninitializedError(f"sync scope for user {user_id} is not initialized")


async def transition_to_initialized(
    conn: AsyncConnection, scope: ScopeRecord, source_id: str
) -> ScopeRecord:
    """Make the locked scope ``INITIALIZED`` by ``source_id`` (terminal state)."""
    result = await conn.execute(
        _TO_INITIALIZED_SQL, {"user_pk": scope.user_pk, "source_id": source_id}
    )
    return replace(
        scope,
        state=ScopeState.INITIALIZED,
        initializer_source_id=None,
        initialization_id=None,
        lease_expires_at=None,
        lease_expired=False,
        initialized_at=result.scalar_one(),
        initialized_by_source_id=source_id,
    )


async def transition_to_initializing(
    conn: AsyncConnection, scope: ScopeRecord, source_id: str, lease_ttl: timedelta
) -> ScopeRecord:
    """Give ``source_id`` a fresh initialization lease (new UUID v4, expiry ``now()+ttl``)."""
    row = (
        await conn.execute(
            _TO_INITIALIZING_SQL,
            {
                "user_pk": scope.user_pk,
                "source_id": source_id,
                "ttl": lease_ttl.total_seconds(),
            },
        )
    ).one()
    return replace(
        scope,
        state=ScopeState.INITIALIZING,
        initializer_source_id=source_id,
        initialization_id=row[0],
        lease_expires_at=row[1],
        lease_expired=False,
        initialized_at=None,
        initialized_by_source_id=None,
    )
