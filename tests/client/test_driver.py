"""run_on_driver: one hop to the driver thread, inside the caller's transaction."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from oversync_sa.client import driver as driver_mod
from oversync_sa.client.driver import run_on_driver
from oversync_sa.client.runtime import prepare_engine

from .conftest import rows


def _insert_two(cursor: Any) -> tuple[int, str]:
    cursor.executemany("INSERT INTO t (id) VALUES (?)", [("a",), ("b",)])
    cursor.execute("SELECT COUNT(*) FROM t")
    (count,) = cursor.fetchone()
    return int(count), threading.current_thread().name


@pytest.fixture(params=["aiosqlite thread", "fallback"])
async def prepared(
    request: pytest.FixtureRequest, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> AsyncEngine:
    if request.param == "fallback":
        # Another async SQLite driver: statements go through SQLAlchemy's adapted connection.
        monkeypatch.setattr(driver_mod, "worker_submitter", lambda _driver: None)
    prepare_engine(engine)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (id TEXT PRIMARY KEY NOT NULL)")
    return engine


async def test_work_joins_the_callers_transaction(prepared: AsyncEngine) -> None:
    async with prepared.connect() as conn:
        await conn.begin()
        count, _thread = await run_on_driver(conn, _insert_two)
        assert count == 2
        assert await rows(conn, "SELECT id FROM t ORDER BY id") == [("a",), ("b",)]
        await conn.rollback()
        assert await rows(conn, "SELECT COUNT(*) FROM t") == [(0,)]


async def test_work_runs_off_the_event_loop_thread(engine: AsyncEngine) -> None:
    prepare_engine(engine)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (id TEXT PRIMARY KEY NOT NULL)")
        _count, thread = await run_on_driver(conn, _insert_two)
    assert thread != threading.current_thread().name


async def test_sqlite_errors_become_sqlalchemy_errors(prepared: AsyncEngine) -> None:
    async with prepared.connect() as conn:
        await conn.begin()
        with pytest.raises(IntegrityError, match="UNIQUE constraint failed"):
            await run_on_driver(
                conn,
                lambda cursor: cursor.executemany("INSERT INTO t (id) VALUES (?)", [("x",)] * 2),
            )
        await conn.rollback()
        await conn.begin()
        await run_on_driver(conn, _insert_two)  # the connection is still usable
        await conn.commit()
    async with prepared.connect() as conn:
        assert await rows(conn, "SELECT COUNT(*) FROM t") == [(2,)]


async def test_other_errors_pass_through(prepared: AsyncEngine) -> None:
    def fail(_cursor: Any) -> None:
        raise LookupError("not a database error")

    conn: AsyncConnection
    async with prepared.connect() as conn:
        await conn.begin()
        with pytest.raises(LookupError, match="not a database error"):
            await run_on_driver(conn, fail)
        await conn.rollback()
