"""The server killed by SIGKILL inside a commit or a snapshot: PostgreSQL keeps all or nothing.

Each test starts the reference server with ``OVERSYNC_CRASH_POINT`` armed, drives a device
child process at it until the server dies by SIGKILL (the client then fails with a typed error,
it does not crash), checks PostgreSQL holds no half-written bundle or snapshot, restarts the
server on the same database and port without the variable, lets the device continue and checks
convergence.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from oversync_sa._crashpoints import ENV_CRASH_POINT
from oversync_sa.testing import PostgresServer, sqlalchemy_url
from tests import _live_server
from tests.crash._support import (
    BATCH,
    EXIT_SYNC_ERROR,
    ROWS,
    Expected,
    assert_converged,
    assert_ok,
    bundles,
    describe,
    local_state,
    push_sessions,
    run_device,
    write_and_push,
)
from tests.e2e.client._support import JWT_SECRET, Harness, new_user

pytestmark = pytest.mark.postgres


class Servers:
    """Reference-server processes over one database, one after the other, on one port."""

    def __init__(self, database_url: str, tmp: Path) -> None:
        self.database_url = database_url
        self.log = tmp / "server.log"
        self.port = _live_server.free_port()
        self.current: _live_server.ServerProcess | None = None

    @property
    def url(self) -> str:
        assert self.current is not None
        return self.current.base_url

    def start(self, crash: str | None = None) -> _live_server.ServerProcess:
        assert self.current is None or self.current.proc.poll() is not None
        self.current = _live_server.ServerProcess(
            self.database_url, self.log, jwt_secret=JWT_SECRET, port=self.port,
            env={ENV_CRASH_POINT: crash} if crash else None,
        )
        self.current.wait_ready()
        return self.current

    def expect_killed(self) -> None:
        """The armed server died by SIGKILL (so its crash point was really reached)."""
        assert self.current is not None
        code = self.current.proc.wait(timeout=60)
        assert code == -signal.SIGKILL, f"server exit {code}:\n{self.current.tail()}"

    def stop(self) -> None:
        if self.current is not None and self.current.proc.poll() is None:
            code = self.current.stop()
            assert code == 0, self.current.tail()


@pytest.fixture
def servers(pg_server: PostgresServer, tmp_path: Path) -> Iterator[Servers]:
    url = pg_server.create_database()
    servers = Servers(url, tmp_path)
    try:
        yield servers
    finally:
        servers.stop()
        pg_server.drop_database(url)


@pytest.fixture
async def pg(servers: Servers) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sqlalchemy_url(servers.database_url), pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _count(pg: AsyncEngine, sql: str, user: str) -> int:
    async with pg.connect() as conn:
        return int(await conn.scalar(text(sql), {"u": user}) or 0)


@asynccontextmanager
async def _harness(servers: Servers, pg: AsyncEngine, tmp: Path) -> AsyncIterator[Harness]:
    """In-process devices on the current server (its port survives restarts)."""
    assert servers.current is not None
    harness = Harness(servers.current, servers.database_url, pg, tmp)
    try:
        yield harness
    finally:
        for device in harness.devices:
            await device.close()
        await harness.close()


async def _reader(servers: Servers, pg: AsyncEngine, tmp: Path, user: str) -> Path:
    """A fresh in-process device of ``user`` that attached (from a snapshot) and closed."""
    async with _harness(servers, pg, tmp) as harness:
        reader = await harness.device("reader", user=user)
        await reader.attach()
        await reader.close()
        return reader.path


@pytest.mark.parametrize("point", ["server.commit.before_commit", "server.commit.after_commit"])
async def test_server_killed_around_push_commit(
    servers: Servers, pg: AsyncEngine, tmp_path: Path, point: str
) -> None:
    """Killed inside the commit transaction nothing of the bundle is visible; killed after
    COMMIT but before the reply the bundle is whole. Either way the device's outbox resumes
    after the restart and the bundle ends up committed exactly once."""
    servers.start(crash=point)
    user, db = new_user(), tmp_path / "device.db"
    proc = run_device(db, servers.url, user, "attach", "insert:a:3", "push")
    servers.expect_killed()
    assert proc.returncode == EXIT_SYNC_ERROR, describe(proc)

    state = local_state(db)
    assert (state.outbox, state.outbox_state) == (ROWS, "prepared")
    committed = point == "server.commit.after_commit"
    logged = await bundles(pg, user)
    assert [b[3] for b in logged] == ([ROWS] if committed else [])
    for table in ("business.users", "business.posts"):
        rows = await _count(pg, f"SELECT count(*) FROM {table} WHERE _sync_scope_id = :u", user)
        assert rows == (BATCH[1] if committed else 0), table
    row_state = await _count(
        pg, "SELECT count(*) FROM sync.row_state JOIN sync.user_state USING (user_pk)"
        " WHERE user_id = :u", user,
    )
    assert row_state == (ROWS if committed else 0)
    # Not committed: the fully staged session is still there for the retry to replace.
    assert await push_sessions(pg, user) == ([] if committed else [(1, ROWS)])

    servers.start()
    lines = assert_ok(run_device(db, servers.url, user, "attach", "sync"))
    assert lines[-1].startswith("sync committed/"), lines
    assert [b[3] for b in await bundles(pg, user)] == [ROWS]
    reader = await _reader(servers, pg, tmp_path, user)
    await assert_converged(pg, user, Expected.of(BATCH), [db, reader])


async def test_server_killed_mid_snapshot_creation(
    servers: Servers, pg: AsyncEngine, tmp_path: Path
) -> None:
    """Killed while materialising a snapshot for a ``remote_authoritative`` attach: no session
    survives, the device keeps its pending remote replace, and the next attach completes it."""
    servers.start(crash="server.snapshot.materialized")
    user, device = new_user(), tmp_path / "device.db"
    async with _harness(servers, pg, tmp_path) as harness:
        writer = await harness.device("writer", user=user)
        await writer.attach()
        await write_and_push(writer, *BATCH)
        await writer.close()

    proc = run_device(device, servers.url, user, "attach")
    servers.expect_killed()
    assert proc.returncode == EXIT_SYNC_ERROR, describe(proc)
    sessions = await _count(
        pg, "SELECT count(*) FROM sync.snapshot_sessions JOIN sync.user_state USING (user_pk)"
        " WHERE user_id = :u", user,
    )
    assert sessions == 0
    assert await _count(pg, "SELECT count(*) FROM sync.snapshot_session_rows", user) == 0
    state = local_state(device)
    assert (state.binding, state.operation, state.users) == ("anonymous", "remote_replace", {})

    servers.start()
    lines = assert_ok(run_device(device, servers.url, user, "attach", "sync"))
    assert lines[0] == "attach used_remote_state", lines
    await assert_converged(pg, user, Expected.of(BATCH), [writer.path, device])
