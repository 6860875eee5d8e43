"""Per-user serialisation and transient-error retries (SERVER.md §3.6, §2.3).

Every writer for one user (connect, push create/chunk/commit, ``within_sync_bundle``,
``ScopeManager.exec_write``) first takes a *session-level* advisory lock keyed by
``hashtextextended(user_id, 0)`` on a dedicated pooled connection, then runs its transaction on
that same connection. Hashing in SQL (not in Python) keeps a Go and a Python server mutually
exclusive on a shared database.

A session-level lock outlives the transaction, so a connection that could not be unlocked must
never go back to the pool: it is invalidated instead, which closes it and thereby releases the
lock server-side.

Lock and unlock go straight to the driver outside any transaction: one round trip each, where
SQLAlchemy's autobegin would wrap each in its own ``BEGIN``/``COMMIT`` (three round trips) for
a statement that needs no transaction at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Final, TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = [
    "RETRYABLE_SQLSTATES",
    "UNLOCK_TIMEOUT_SECONDS",
    "is_retryable_error",
    "run_with_retry",
    "set_lock_timeout",
    "sqlstate_of",
    "user_lock",
    "user_transaction",
]

_log = logging.getLogger("oversync_sa.server.locks")

_T = TypeVar("_T")

#: serialization_failure, deadlock_detected, lock_not_available (also raised by lock_timeout).
RETRYABLE_SQLSTATES: Final = frozenset({"40001", "40P01", "55P03"})

#: Upper bound for the unlock round trip; beyond it the connection is discarded instead.
UNLOCK_TIMEOUT_SECONDS: Final = 5.0

_LOCK_SQL: Final = "SELECT pg_advisory_lock(hashtextextended($1, 0))"
_UNLOCK_SQL: Final = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"


def sqlstate_of(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE carried by ``exc`` (or the driver error it wraps), if any."""
    current: BaseException | None = exc
    seen = 0
    while current is not None and seen < 8:
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str) and code:
            return code
        if isinstance(current, DBAPIError) and current.orig is not None:
            current = current.orig
        else:
            current = current.__cause__
        seen += 1
    return None


def is_retryable_error(exc: BaseException) -> bool:
    """True when ``exc`` is a transient lock/serialisation failure worth a fresh transaction."""
    return sqlstate_of(exc) in RETRYABLE_SQLSTATES


async def run_with_retry(
    attempt: Callable[[], Awaitable[_T]], *, attempts: int, backoff: float
) -> _T:
    """Run ``attempt`` until it succeeds, retrying only retryable SQLSTATEs.

    Back-off is linear: ``backoff * n`` seconds before retry ``n`` (bootstrap uses 3 attempts and
    0.05 s, i.e. 50 ms then 100 ms). ``attempt`` must open its own transaction each time, since a
    failed one is unusable. ``attempts`` below 1 is treated as 1.
    """
    total = max(attempts, 1)
    for number in range(1, total + 1):
        try:
            return await attempt()
        except Exception as exc:
            if number == total or not is_retryable_error(exc):
                raise
            _log.info(
                "retrying transaction after SQLSTATE %s (attempt %d of %d)",
                sqlstate_of(exc),
                number,
                total,
            )
        await asyncio.sleep(backoff * number)
    raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises


async def set_lock_timeout(conn: AsyncConnection, duration: timedelta | float) -> None:
    """``SET LOCAL lock_timeout`` for the running transaction; non-positive values do nothing.

    A float is seconds. ``set_config(..., true)`` is used because ``SET`` takes no bind
    parameters.
    """
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    if seconds <= 0:
        return
    millis = max(int(seconds * 1000), 1)
    await conn.execute(
        text("SELECT set_config('lock_timeout', :value, true)"), {"value": f"{millis}ms"}
    )


async def _driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``; with no SQLAlchemy transaction open it autocommits."""
    return (await conn.get_raw_connection()).driver_connection


async def _release(conn: AsyncConnection, user_id: str) -> None:
    """Unlock within :data:`UNLOCK_TIMEOUT_SECONDS`, or discard the connection with its lock."""
    if conn.closed or conn.invalidated:
        return
    try:
        async with asyncio.timeout(UNLOCK_TIMEOUT_SECONDS):
            if conn.in_transaction():
                await conn.rollback()
            raw = await _driver(conn)
            if raw.is_in_transaction():
                # Something began a transaction behind SQLAlchemy's back; the unlock must not
                # ride on it (a later ROLLBACK would not undo a session lock, but a failed
                # transaction would refuse the statement).
                raise RuntimeError("driver connection still inside a transaction at unlock")
            released = bool(await raw.fetchval(_UNLOCK_SQL, user_id))
        if not released:
            _log.warning("advisory lock for user %r was not held at unlock", user_id)
    except Exception:
        # The lock may still be held by this session; closing the session is the only safe
        # release left, and the pool must never hand out a connection that holds it.
        _log.warning("could not release advisory lock for user %r; discarding connection", user_id)
        await _invalidate_quietly(conn)


async def _invalidate_quietly(conn: AsyncConnection) -> None:
    try:
        await conn.invalidate()
    except Exception:  # the connection is already broken; nothing else to do
        _log.debug("invalidating a broken connection failed", exc_info=True)


@asynccontextmanager
async def user_lock(engine: AsyncEngine, user_id: str) -> AsyncIterator[AsyncConnection]:
    """Hold the per-user session advisory lock on a dedicated pooled connection.

    The yielded connection has no open transaction; callers begin their own (see
    :func:`user_transaction`). The lock is released on exit, whatever happened inside.
    """
    async with engine.connect() as conn:
        try:
            await (await _driver(conn)).fetchval(_LOCK_SQL, user_id)
        except BaseException:
            # Cancelled or failed mid-acquire: the server may have granted the lock anyway.
            await _invalidate_quietly(conn)
            raise
        try:
            yield conn
        finally:
            await _release(conn, user_id)


@asynccontextmanager
async def user_transaction(
    engine: AsyncEngine, user_id: str, *, lock_timeout: timedelta | float | None = None
) -> AsyncIterator[AsyncConnection]:
    """Lock ``user_id``, then run one READ COMMITTED transaction on the locked connection.

    The transaction commits when the block exits normally and rolls back on an exception; the
    user lock is released after either. ``lock_timeout`` (seconds or a timedelta) applies
    ``SET LOCAL lock_timeout`` to the transaction, so a blocked row lock fails with SQLSTATE
    ``55P03`` (retryable, see :func:`run_with_retry`) instead of waiting forever.
    """
    async with user_lock(engine, user_id) as conn, conn.begin():
        if lock_timeout is not None:
            await set_lock_timeout(conn, lock_timeout)
        yield conn
