"""Crash-suite helpers: run a device child process, kill it, and check convergence.

A "device" here is ``tests/crash/_device.py`` in its own process (a real ``SIGKILL`` must not
take the test runner with it). Convergence is checked from the outside: the device's SQLite
file is read with :mod:`sqlite3` after the process exited, the server's PostgreSQL directly.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa._crashpoints import ENV_CRASH_POINT
from tests import _live_server
from tests.crash._device import EXIT_SYNC_ERROR, row_ids
from tests.e2e.client._support import Device

__all__ = [
    "BATCH",
    "ROWS",
    "EXIT_SYNC_ERROR",
    "Expected",
    "assert_converged",
    "assert_server_consistent",
    "local_state",
    "push_sessions",
    "run_device",
    "run_killed",
    "write_and_push",
]

#: ``insert:a:3`` writes 3 users + 3 posts: a push of three 2-row chunks.
BATCH = ("a", 3)
#: The rows one ``BATCH`` writes.
ROWS = 2 * BATCH[1]

#: Generous: a child only waits for a local server; hitting it means a hang, which is a bug.
_CHILD_TIMEOUT = 180.0


@dataclass
class Expected:
    """Rows every device of a user must end up with: users ``{id: name}``, posts ``{id: author}``.
    """

    users: dict[uuid.UUID, str]
    posts: dict[uuid.UUID, uuid.UUID]

    @classmethod
    def of(cls, *batches: tuple[str, int]) -> Expected:
        """The rows of the ``insert:PREFIX:N`` steps ``batches`` (``(PREFIX, N)`` pairs)."""
        users: dict[uuid.UUID, str] = {}
        posts: dict[uuid.UUID, uuid.UUID] = {}
        for prefix, count in batches:
            user_ids, post_ids = row_ids(prefix, count)
            for index, (user_id, post_id) in enumerate(zip(user_ids, post_ids, strict=True)):
                users[user_id] = f"{prefix}-{index}"
                posts[post_id] = user_id
        return cls(users, posts)

    @property
    def row_count(self) -> int:
        return len(self.users) + len(self.posts)


def run_device(
    db: Path, url: str, user: str, *steps: str, crash: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the device child once; ``crash`` sets ``OVERSYNC_CRASH_POINT`` for this run only."""
    env = {k: v for k, v in os.environ.items() if k != ENV_CRASH_POINT}
    if crash is not None:
        env[ENV_CRASH_POINT] = crash
    return subprocess.run(
        [sys.executable, "-m", "tests.crash._device", str(db), url, user, *steps],
        cwd=_live_server.REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=_CHILD_TIMEOUT, check=False,
    )


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"


def assert_ok(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The run finished every step; returns its ``STEP RESULT`` lines."""
    assert proc.returncode == 0, describe(proc)
    return proc.stdout.splitlines()


def run_killed(db: Path, url: str, user: str, *steps: str, crash: str) -> list[str]:
    """Run with ``crash`` armed and require death by SIGKILL (else the point was never hit)."""
    proc = run_device(db, url, user, *steps, crash=crash)
    assert proc.returncode == -signal.SIGKILL, f"{crash} was not hit: {describe(proc)}"
    return proc.stdout.splitlines()


# --------------------------------------------------------------------------- local state


@dataclass
class LocalState:
    users: dict[uuid.UUID, str]
    posts: dict[uuid.UUID, uuid.UUID]
    dirty: int
    outbox: int
    outbox_state: str
    snapshot_stage: int
    push_stage: int
    binding: str
    rebuild_required: bool
    operation: str


def local_state(db: Path) -> LocalState:
    """Business rows and sync bookkeeping of a device's SQLite file (the device is not running)."""
    conn = sqlite3.connect(db)
    try:
        def scalar(sql: str) -> Any:
            return conn.execute(sql).fetchone()[0]

        binding, rebuild = conn.execute(
            "SELECT binding_state, rebuild_required FROM _sync_attachment_state"
        ).fetchone()
        return LocalState(
            users={uuid.UUID(bytes=i): n for i, n in conn.execute("SELECT id, name FROM users")},
            posts={
                uuid.UUID(bytes=i): uuid.UUID(bytes=a)
                for i, a in conn.execute("SELECT id, author_id FROM posts")
            },
            dirty=scalar("SELECT COUNT(*) FROM _sync_dirty_rows"),
            outbox=scalar("SELECT COUNT(*) FROM _sync_outbox_rows"),
            outbox_state=scalar("SELECT state FROM _sync_outbox_bundle"),
            snapshot_stage=scalar("SELECT COUNT(*) FROM _sync_snapshot_stage"),
            push_stage=scalar("SELECT COUNT(*) FROM _sync_push_stage"),
            binding=str(binding),
            rebuild_required=bool(rebuild),
            operation=scalar("SELECT kind FROM _sync_operation_state"),
        )
    finally:
        conn.close()


# --------------------------------------------------------------------------- server state


async def write_and_push(device: Device, prefix: str, count: int) -> None:
    """An in-process device writes what ``insert:PREFIX:COUNT`` would, then pushes once."""
    users, posts = row_ids(prefix, count)
    statements = []
    for index, (user_id, post_id) in enumerate(zip(users, posts, strict=True)):
        statements.append((
            "INSERT INTO users (id, name, email) VALUES (?, ?, ?)",
            (user_id.bytes, f"{prefix}-{index}", f"{prefix}-{index}@example.com"),
        ))
        statements.append((
            "INSERT INTO posts (id, title, content, author_id) VALUES (?, ?, ?, ?)",
            (post_id.bytes, f"{prefix}-post-{index}", "body", user_id.bytes),
        ))
    await device.execute_many(statements)
    report = await device.c.push_pending()
    assert report.outcome.value == "committed", report


async def _rows(pg: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with pg.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def server_business(pg: AsyncEngine, user: str) -> Expected:
    users = await _rows(pg, "SELECT id, name FROM business.users WHERE _sync_scope_id = :u",
                        u=user)
    posts = await _rows(
        pg, "SELECT id, author_id FROM business.posts WHERE _sync_scope_id = :u", u=user
    )
    return Expected({r[0]: r[1] for r in users}, {r[0]: r[1] for r in posts})


async def bundles(pg: AsyncEngine, user: str) -> list[tuple[int, str, int, int]]:
    """``(bundle_seq, source_id, source_bundle_id, row_count)`` of the user's bundles."""
    return [
        (int(r[0]), str(r[1]), int(r[2]), int(r[3]))
        for r in await _rows(
            pg,
            "SELECT b.bundle_seq, b.source_id, b.source_bundle_id, b.row_count"
            " FROM sync.bundle_log b JOIN sync.user_state u USING (user_pk)"
            " WHERE u.user_id = :u ORDER BY b.bundle_seq",
            u=user,
        )
    ]


async def push_sessions(pg: AsyncEngine, user: str) -> list[tuple[int, int]]:
    """``(source_bundle_id, next_expected_row_ordinal)`` of the user's open push sessions."""
    return [
        (int(r[0]), int(r[1]))
        for r in await _rows(
            pg,
            "SELECT p.source_bundle_id, p.next_expected_row_ordinal FROM sync.push_sessions p"
            " JOIN sync.user_state u USING (user_pk) WHERE u.user_id = :u",
            u=user,
        )
    ]


async def assert_server_consistent(pg: AsyncEngine, user: str) -> None:
    """PostgreSQL holds only whole bundles, each once, and row_state matches the tables.

    * bundle sequences are 1..head with no gap, and each bundle has exactly ``row_count`` rows;
    * every source's bundle ids are 1..k and ``max_committed_source_bundle_id`` is k;
    * no business row was written by two bundles (every workload writes each key once);
    * the live ``row_state`` keys are exactly the business rows, each at a logged bundle;
    * no push session is left behind (a replaced or committed session is deleted).
    """
    (user_pk, next_seq), = await _rows(
        pg, "SELECT user_pk, next_bundle_seq FROM sync.user_state WHERE user_id = :u", u=user
    )
    logged = await bundles(pg, user)
    assert [b[0] for b in logged] == list(range(1, int(next_seq))), logged
    counts = dict(await _rows(
        pg, "SELECT bundle_seq, count(*) FROM sync.bundle_rows WHERE user_pk = :p"
        " GROUP BY bundle_seq", p=user_pk,
    ))
    assert {b[0]: b[3] for b in logged} == counts, (logged, counts)

    by_source: dict[str, list[int]] = {}
    for _, source, source_bundle_id, _ in logged:
        by_source.setdefault(source, []).append(source_bundle_id)
    committed = dict(await _rows(
        pg, "SELECT source_id, max_committed_source_bundle_id FROM sync.source_state"
        " WHERE user_pk = :p", p=user_pk,
    ))
    for source, ids in by_source.items():
        assert ids == list(range(1, len(ids) + 1)), (source, ids)
        assert committed[source] == len(ids), (source, committed)

    twice = await _rows(
        pg, "SELECT table_id, key_bytes, count(*) FROM sync.bundle_rows WHERE user_pk = :p"
        " GROUP BY table_id, key_bytes HAVING count(*) > 1", p=user_pk,
    )
    assert twice == [], f"rows written by more than one bundle: {twice}"

    live_state = {
        (str(r[0]), bytes(r[1])): int(r[2])
        for r in await _rows(
            pg, "SELECT c.table_name, s.key_bytes, s.bundle_seq FROM sync.row_state s"
            " JOIN sync.table_catalog c USING (table_id)"
            " WHERE s.user_pk = :p AND NOT s.deleted", p=user_pk,
        )
    }
    business = await server_business(pg, user)
    tables = {("users", k.bytes) for k in business.users}
    tables |= {("posts", k.bytes) for k in business.posts}
    assert set(live_state) == tables
    assert set(live_state.values()) <= {b[0] for b in logged}
    sessions = await push_sessions(pg, user)
    assert sessions == [], f"push sessions left behind: {sessions}"


async def assert_converged(
    pg: AsyncEngine, user: str, expected: Expected, devices: Iterable[Path]
) -> None:
    """The server holds exactly ``expected`` (whole, once) and every device mirrors it."""
    await assert_server_consistent(pg, user)
    server = await server_business(pg, user)
    assert server.users == expected.users
    assert server.posts == expected.posts
    for db in devices:
        state = local_state(db)
        assert (state.users, state.posts) == (expected.users, expected.posts), db
        assert (state.dirty, state.outbox, state.outbox_state) == (0, 0, "none"), state
        assert (state.snapshot_stage, state.push_stage) == (0, 0), state
        assert (state.binding, state.rebuild_required, state.operation) == (
            "attached", False, "none"
        ), state
