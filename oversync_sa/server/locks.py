"""Per-user serialisation and transient-error retries (SERVER.md §3.6, §2.3).

Every writer for one user (connect, push create/chunk/commit, ``within_sync_bundle``,
``ScopeManager.exec_write``) holds an advisory lock keyed by ``hashtextextended(user_id, 0)``
for its whole transaction. Hashing in SQL (not in Python) keeps a Go and a Python server
mutually exclusive on a shared database: PostgreSQL's session-level and transaction-level
advisory locks on one key block each other, so Go's session lock and ours exclude each other.

Writers (:func:`user_transaction`) take the *transaction-level* lock as the statement right
after ``BEGIN``, sent together with ``BEGIN`` (and ``SET LOCAL lock_timeout`` / ``SET
CONSTRAINTS ALL DEFERRED`` when asked for) as one simple-protocol message, and COMMIT releases
it. §3.6 describes Go's session lock taken before ``BEGIN`` and released after the transaction;
for a READ COMMITTED transaction, whose every statement takes a fresh snapshot, the two are
equivalent, and ours costs one round trip instead of four (lock, ``BEGIN``, unlock and the
separate ``SET``). Under load the server spends most of a small push waiting on PostgreSQL
sockets, so round trips are what a push costs.

REPEATABLE READ readers that need the lock (snapshot creation, :func:`user_lock`) keep the
session lock taken before ``BEGIN``: there the snapshot is taken by the first statement, and a
lock acquired inside that statement would come after the snapshot. A session-level lock outlives
the transaction, so a connection that could not be unlocked must never go back to the pool: it
is invalidated instead, which closes it and thereby releases the lock server-side.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Final, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from oversync_sa.errors import OversyncError
from oversync_sa.server import fastsql

__all__ = [
    "RETRYABLE_SQLSTATES",
    "TransactionControlError",
    "UNLOCK_TIMEOUT_SECONDS",
    "is_retryable_error",
    "run_with_retry",
    "sqlstate_of",
    "user_lock",
    "user_transaction",
]

_log = logging.getLogger("oversync_sa.server.locks")

_T = TypeVar("_T")


class TransactionControlError(OversyncError, RuntimeError):
    """Code running inside a bundle transaction called ``commit()`` or ``rollback()``.

    The transaction belongs to oversync_sa (it commits with the bundle's finalisation, or rolls
    back when the callback raises). The whole transaction was rolled back; to abandon a bundle,
    raise an exception from the callback instead.
    """

#: serialization_failure, deadlock_detected, lock_not_available (also raised by lock_timeout).
RETRYABLE_SQLSTATES: Final = frozenset({"40001", "40P01", "55P03"})

#: Upper bound for the unlock round trip; beyond it the connection is discarded instead.
UNLOCK_TIMEOUT_SECONDS: Final = 5.0

_LOCK_SQL: Final = "SELECT pg_advisory_lock(hashtextextended($1, 0))"
_XACT_LOCK_SQL: Final = "SELECT pg_advisory_xact_lock(hashtextextended(:user_id, 0))"
_BEGIN_SQL: Final = "BEGIN ISOLATION LEVEL READ COMMITTED"
_DEFER_SQL: Final = "SET CONSTRAINTS ALL DEFERRED"
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


def _lock_timeout_millis(duration: timedelta | float | None) -> int | None:
    if duration is None:
        return None
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    if seconds <= 0:
        return None
    return max(int(seconds * 1000), 1)


async def _release(conn: AsyncConnection, user_id: str) -> None:
    """Unlock within :data:`UNLOCK_TIMEOUT_SECONDS`, or discard the connection with its lock."""
    if conn.closed or conn.invalidated:
        return
    try:
        async with asyncio.timeout(UNLOCK_TIMEOUT_SECONDS):
            if conn.in_transaction():
                await conn.rollback()
            raw = await fastsql.driver(conn)
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
            await (await fastsql.driver(conn)).fetchval(_LOCK_SQL, user_id)
        except BaseException:
            # Cancelled or failed mid-acquire: the server may have granted the lock anyway.
            await _invalidate_quietly(conn)
            raise
        try:
            yield conn
        finally:
            await _release(conn, user_id)


def _escape_literal(value: str) -> str | None:
    """``value`` as an ``E''`` string literal, or ``None`` if it holds a NUL byte.

    ``E''`` strings treat backslashes the same way whatever ``standard_conforming_strings`` says.
    A simple-protocol query is NUL-terminated text, so a NUL cannot be quoted at all; such an id
    (which PostgreSQL's ``text`` cannot store either) takes the bind-parameter path, which fails
    with PostgreSQL's own error.
    """
    if "\x00" in value:
        return None
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _opening_sql(user_id: str, lock_timeout: timedelta | float | None, defer: bool) -> str | None:
    """``BEGIN``, the user's transaction lock and the ``SET`` s, as one simple query."""
    literal = _escape_literal(user_id)
    if literal is None:
        return None
    # The lock comes before SET LOCAL lock_timeout: waiting for the user's other writer is
    # serialisation, not a blocked row, and must not time out.
    statements = [_BEGIN_SQL, f"SELECT pg_advisory_xact_lock(hashtextextended({literal}, 0))"]
    millis = _lock_timeout_millis(lock_timeout)
    if millis is not None:
        statements.append(f"SET LOCAL lock_timeout = '{millis}ms'")
    if defer:
        statements.append(_DEFER_SQL)
    return "; ".join(statements)


async def _open(
    conn: AsyncConnection, user_id: str, lock_timeout: timedelta | float | None, defer: bool
) -> None:
    opening = _opening_sql(user_id, lock_timeout, defer)
    raw = await fastsql.driver(conn)
    if opening is not None:
        await raw.execute(opening)
        return
    await raw.execute(_BEGIN_SQL)
    await conn.execute(text(_XACT_LOCK_SQL), {"user_id": user_id})


async def _finish(conn: AsyncConnection, *, commit: bool) -> None:
    """COMMIT (errors raised, translated by SQLAlchemy) or ROLLBACK (errors swallowed).

    The connection runs in SQLAlchemy's AUTOCOMMIT mode, so the pool's reset-on-return would
    not end a transaction left open here: whenever the outcome is unknown, the connection is
    invalidated instead of going back to the pool.
    """
    if conn.closed or conn.invalidated:
        if commit:
            # The session (and its transaction) ended with the connection: nothing was committed,
            # and the caller must not be told otherwise.
            raise ConnectionError(
                "the database connection was lost before COMMIT; the transaction was not committed"
            )
        return
    try:
        async with asyncio.timeout(None if commit else UNLOCK_TIMEOUT_SECONDS):
            await fastsql.run(conn, "COMMIT" if commit else "ROLLBACK")
    except BaseException:
        # A COMMIT the server refused (a deferred foreign key) leaves the session idle and the
        # connection reusable. Anything else - a failed ROLLBACK, a COMMIT cut off - may leave
        # the transaction open; the driver's status cannot tell while a cancelled statement is
        # still winding down, so the connection is discarded.
        if not commit or conn.invalidated or not await _is_idle(conn):
            await _invalidate_quietly(conn)
        if commit:
            raise
        _log.warning("rollback failed; connection discarded", exc_info=True)


async def _is_idle(conn: AsyncConnection) -> bool:
    try:
        raw = await fastsql.driver(conn)
        return not (raw.is_closed() or raw.is_in_transaction())
    except Exception:
        return False


#: Connection -> the control calls recorded while a sync transaction's body runs on it.
_recorders: weakref.WeakKeyDictionary[Connection, list[str]] = weakref.WeakKeyDictionary()
#: Engines whose connections report ``commit()`` / ``rollback()`` to :data:`_recorders`.
_watched: weakref.WeakSet[Engine] = weakref.WeakSet()


def _recorder(call: str) -> Callable[[Connection], None]:
    def record(conn: Connection) -> None:
        calls = _recorders.get(conn)
        if calls is not None:
            calls.append(call)

    return record


_record_commit: Final = _recorder("commit()")
_record_rollback: Final = _recorder("rollback()")


class _ControlGuard:
    """Records ``commit()`` / ``rollback()`` calls on the connection while the body runs.

    In AUTOCOMMIT mode SQLAlchemy would turn them into no-ops at the database (an ORM session's
    ``rollback()`` included), so a callback that meant to undo its writes would see them
    committed. Recording instead of raising keeps the original error when SQLAlchemy rolls
    back on its own after a failed flush.

    The listeners are the engine's, added once: listening on each connection per transaction
    (and removing again) cost about 3 % of a server worker's CPU under load. They look the
    connection up in :data:`_recorders`, which holds only connections inside a guarded body.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self._target: Connection = conn.sync_connection  # type: ignore[assignment]
        self.calls: list[str] = []
        engine = self._target.engine
        if engine not in _watched:
            event.listen(engine, "commit", _record_commit)
            event.listen(engine, "rollback", _record_rollback)
            _watched.add(engine)

    def __enter__(self) -> _ControlGuard:
        _recorders[self._target] = self.calls
        return self

    def __exit__(self, *_exc: object) -> None:
        _recorders.pop(self._target, None)


@asynccontextmanager
async def user_transaction(
    engine: AsyncEngine,
    user_id: str,
    *,
    lock_timeout: timedelta | float | None = None,
    defer_constraints: bool = False,
) -> AsyncIterator[AsyncConnection]:
    """Run one READ COMMITTED transaction holding ``user_id`` 's lock (see the module docstring).

    The transaction commits when the block exits normally and rolls back on an exception; the
    lock ends with it. ``lock_timeout`` (seconds or a timedelta) applies ``SET LOCAL
    lock_timeout`` after the user lock is held, so a blocked row lock fails with SQLSTATE
    ``55P03`` (retryable, see :func:`run_with_retry`) instead of waiting forever.
    ``defer_constraints`` defers every deferrable constraint (a bundle may then write parents
    and children in any order; violations surface at COMMIT, as SQLAlchemy errors).

    The yielded connection is in SQLAlchemy's AUTOCOMMIT mode over a transaction opened by
    hand, so that ``BEGIN`` can travel with the lock. Savepoints (``begin_nested``) work as
    usual; a ``commit()`` or ``rollback()`` on the connection (or on an ORM session joined to
    it) rolls the whole transaction back and raises :class:`TransactionControlError`.
    """
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            await _open(conn, user_id, lock_timeout, defer_constraints)
        except BaseException:
            # Cancelled or failed while waiting for the lock: whether BEGIN or the lock took
            # effect is unknown, and closing the session is the one way to be sure of neither.
            await _invalidate_quietly(conn)
            raise
        try:
            with _ControlGuard(conn) as guard:
                yield conn
        except BaseException:
            await _finish(conn, commit=False)
            raise
        if guard.calls:
            await _finish(conn, commit=False)
            raise TransactionControlError(
                f"{' and '.join(dict.fromkeys(guard.calls))} called inside the sync transaction "
                f"of user {user_id!r}; it was rolled back. Raise an exception from the callback "
                "to abandon a bundle; oversync_sa commits it."
            )
        await _finish(conn, commit=True)
