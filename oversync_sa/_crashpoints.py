"""Crash points: named durable boundaries where a test can make the process die for real.

Why: the sync protocol promises that a client or server killed at *any* moment loses nothing
and duplicates nothing (CLIENT.md §5.6, SERVER.md §5). Exceptions raised at a boundary do not
prove that - ``finally`` blocks, context managers and rollbacks still run. A real ``SIGKILL``
runs nothing: no rollback, no flush, no close. The crash-point suite (``tests/crash``) starts
clients and the reference server as child processes with ``OVERSYNC_CRASH_POINT`` set, lets
them die at one of the points below, restarts them on the same SQLite files and PostgreSQL
database and checks that everything converges.

It is a testing seam and free in production: the variable is read once, at import, and
:func:`crash_point` is a comparison against ``None`` unless it is set.

``OVERSYNC_CRASH_POINT`` holds ``name`` (die the first time the point is reached) or
``name@N`` (die the N-th time, e.g. after chunk 2 of 3). An unknown name or a bad count fails
the import with :class:`~oversync_sa.errors.ConfigurationError`, so a typo cannot make a crash
test silently pass without crashing.
"""

from __future__ import annotations

import os
import signal
from typing import Final

from oversync_sa.errors import ConfigurationError

__all__ = ["CRASH_POINTS", "ENV_CRASH_POINT", "crash_point"]

ENV_CRASH_POINT: Final = "OVERSYNC_CRASH_POINT"

#: Every point, with the state the process leaves behind when it dies there.
CRASH_POINTS: Final[dict[str, str]] = {
    # client
    "client.outbox.freeze": "inside the freeze transaction, outbox written, not committed",
    "client.push.chunk_uploaded": "after a push chunk was accepted by the server",
    "client.push.commit_replied": "after the commit reply arrived, before it was processed",
    "client.push.before_replay": "outbox committed_remote and rows fetched, before replay",
    "client.replay.applied": "inside the replay transaction, rows applied, not committed",
    "client.pull.applied": "inside a pulled bundle's transaction, rows applied, not committed",
    "client.snapshot.chunk_staged": "after a snapshot chunk was committed to the stage",
    "client.snapshot.swap_applied": "inside the swap transaction, stage applied, not committed",
    "client.attach.connect_reply": "after the server's connect resolution, nothing persisted",
    "client.detach.cleared": "inside the detach transaction, tables cleared, not committed",
    # server
    "server.commit.before_commit": "inside the push commit transaction, before COMMIT",
    "server.commit.after_commit": "push commit committed, before the HTTP reply",
    "server.snapshot.materialized": "inside snapshot creation, rows copied, before COMMIT",
}

# SIGKILL does not exist on Windows; TerminateProcess (what os.kill does there) is as abrupt.
_KILL: Final = getattr(signal, "SIGKILL", signal.SIGTERM)


def _parse(value: str) -> tuple[str, int] | None:
    value = value.strip()
    if not value:
        return None
    name, _, count = value.partition("@")
    if name not in CRASH_POINTS:
        raise ConfigurationError(
            f"{ENV_CRASH_POINT}={value!r}: unknown crash point {name!r};"
            f" known points: {', '.join(sorted(CRASH_POINTS))}"
        )
    if not count:
        return name, 1
    if not count.isdigit() or int(count) < 1:
        raise ConfigurationError(
            f"{ENV_CRASH_POINT}={value!r}: the count after '@' must be a positive integer"
        )
    return name, int(count)


_TARGET: Final = _parse(os.environ.get(ENV_CRASH_POINT, ""))
_hits = 0


def crash_point(name: str) -> None:
    """Kill this process with ``SIGKILL`` if ``OVERSYNC_CRASH_POINT`` selects this visit of
    ``name``; otherwise do nothing."""
    if _TARGET is None or name != _TARGET[0]:
        return
    global _hits
    _hits += 1
    if _hits >= _TARGET[1]:
        os.kill(os.getpid(), _KILL)
