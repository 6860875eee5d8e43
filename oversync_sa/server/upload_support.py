"""Plumbing shared by connect and the push-session endpoints (SERVER.md §3.6, §5, §9.2).

* :func:`upload_transaction` runs one push transaction the way §5 prescribes: per-user advisory
  lock, READ COMMITTED, optional ``SET LOCAL lock_timeout`` and up to three attempts on
  transient lock/serialisation failures.
* :func:`unexpected_as` turns anything that is not a contract error into the endpoint's own
  500 code, so each endpoint maps failures in one place and never leaks a driver exception.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.errors import WireError
from oversync_sa.server.locks import run_with_retry, sqlstate_of, user_transaction

if TYPE_CHECKING:
    from oversync_sa.server.service import SyncService

__all__ = [
    "UPLOAD_ATTEMPTS",
    "UPLOAD_BACKOFF_SECONDS",
    "client_data_reason",
    "schema_drift_reason",
    "unexpected_as",
    "upload_transaction",
]

_log = logging.getLogger("oversync_sa.server.push")

_T = TypeVar("_T")

#: SQLSTATE classes a pushed row's own data causes: 22 data exception, 23 integrity violation
#: (a deferred foreign key at COMMIT, NOT NULL, unique, CHECK).
_CLIENT_DATA_CLASSES: Final = ("22", "23")
# undefined_column, undefined_table, datatype_mismatch: the live table no longer matches the
# column map bootstrap captured (topology is restart-only, SERVER.md §2.5).
_SCHEMA_DRIFT_STATES: Final = frozenset({"42703", "42P01", "42804"})

#: Push create/chunk/commit retry budget: 3 attempts, linear 25 ms then 50 ms back-off.
UPLOAD_ATTEMPTS: Final = 3
UPLOAD_BACKOFF_SECONDS: Final = 0.025


async def upload_transaction(
    service: SyncService,
    user_id: str,
    body: Callable[[AsyncConnection], Awaitable[_T]],
    *,
    retry: bool = True,
    defer_constraints: bool = False,
) -> _T:
    """Run ``body`` in one locked transaction of ``user_id`` and commit it.

    The transaction commits when ``body`` returns (also when it returns a replay answer such as
    ``already_committed``) and rolls back when it raises. Each retry opens a fresh transaction
    and re-runs ``body`` from the start, so ``body`` must not keep state across calls. Connect
    passes ``retry=False`` (§4.2 runs exactly one transaction). ``defer_constraints`` defers
    every deferrable constraint from the start (push commit's business writes).
    """
    config = service.config
    lock_timeout = config.upload_lock_timeout if config.upload_lock_timeout_enabled else None

    async def attempt() -> _T:
        async with user_transaction(
            service.engine, user_id, lock_timeout=lock_timeout,
            defer_constraints=defer_constraints,
        ) as conn:
            return await body(conn)

    return await run_with_retry(
        attempt,
        attempts=UPLOAD_ATTEMPTS if retry else 1,
        backoff=UPLOAD_BACKOFF_SECONDS,
    )


@contextmanager
def unexpected_as(error: type[WireError], operation: str) -> Iterator[None]:
    """Let contract errors through; re-raise anything else as ``error`` (the endpoint's 500).

    The original exception stays attached as ``__cause__`` and is logged with its traceback,
    because the wire message deliberately says nothing about internals.
    """
    try:
        yield
    except WireError:
        raise
    except Exception as exc:
        _log.exception("%s failed", operation)
        raise error(f"{operation} failed") from exc


def _postgres_message(exc: BaseException) -> str | None:
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            break
        message = getattr(current, "message", None)
        if isinstance(message, str) and message:
            detail = getattr(current, "detail", None)
            return f"{message} ({detail})" if isinstance(detail, str) and detail else message
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


def schema_drift_reason(exc: BaseException) -> str | None:
    """A message for a commit that failed because a registered table changed under the server.

    Bootstrap captured each registered table's columns; an ``ALTER TABLE`` after that (a dropped
    or retyped column, a dropped table) makes staged rows that were valid at upload fail at
    apply. Neither the client nor a retry can fix that, only a restart that re-runs bootstrap,
    so the message says so instead of leaving a bare 500.
    """
    if sqlstate_of(exc) not in _SCHEMA_DRIFT_STATES:
        return None
    message = _postgres_message(exc) or "undefined column or table"
    return (
        f"registered table schema changed after bootstrap ({message}); "
        "restart the server so bootstrap re-reads the schema"
    )


def client_data_reason(exc: BaseException) -> str | None:
    """PostgreSQL's own words for a failure the pushed rows caused, else ``None``.

    A commit that breaks a foreign key, NOT NULL, unique or CHECK rule fails because of the
    client's data, and retrying never helps; the contract still answers ``500
    push_session_commit_failed``, but with the constraint and table named the client (and its
    developer) can see which row to fix. Only the message and detail are used: they describe
    the pusher's own rows and schema, nothing else.
    """
    code = sqlstate_of(exc)
    if code is None or not code.startswith(_CLIENT_DATA_CLASSES):
        return None
    return _postgres_message(exc)
