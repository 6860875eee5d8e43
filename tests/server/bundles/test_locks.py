"""Per-user advisory lock, lock_timeout and the retry helper (§3.6, §2.3)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server.locks import (
    is_retryable_error,
    run_with_retry,
    sqlstate_of,
    user_lock,
    user_transaction,
)

TRY_LOCK = sa.text("SELECT pg_try_advisory_lock(hashtextextended(:u, 0))")
UNLOCK = sa.text("SELECT pg_advisory_unlock(hashtextextended(:u, 0))")


async def _held_elsewhere(engine: AsyncEngine, user: str) -> bool:
    async with engine.connect() as conn:
        got = bool(await conn.scalar(TRY_LOCK, {"u": user}))
        if got:
            await conn.execute(UNLOCK, {"u": user})
        return not got


async def test_same_user_is_serialised_other_users_are_not(pg_engine: AsyncEngine) -> None:
    order: list[str] = []
    inside = asyncio.Event()

    async def first() -> None:
        async with user_transaction(pg_engine, "alice"):
            order.append("first-in")
            inside.set()
            await asyncio.sleep(0.2)
            order.append("first-out")

    async def second() -> None:
        await inside.wait()
        async with user_transaction(pg_engine, "alice"):
            order.append("second-in")

    async def other_user() -> None:
        await inside.wait()
        async with user_transaction(pg_engine, "bob"):
            order.append("bob")

    await asyncio.gather(first(), second(), other_user())
    assert order == ["first-in", "bob", "first-out", "second-in"]
    assert not await _held_elsewhere(pg_engine, "alice")


async def test_lock_is_released_after_a_failed_transaction(pg_engine: AsyncEngine) -> None:
    held_inside: list[bool] = []

    async def failing() -> None:
        async with user_transaction(pg_engine, "alice") as conn:
            await conn.execute(sa.text("CREATE TABLE t_rollback (x int)"))
            held_inside.append(await _held_elsewhere(pg_engine, "alice"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing()
    assert held_inside == [True]
    assert not await _held_elsewhere(pg_engine, "alice")
    async with pg_engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT to_regclass('t_rollback')")) is None


async def test_broken_connection_is_discarded_not_returned_with_the_lock(
    pg_engine: AsyncEngine,
) -> None:
    async with user_lock(pg_engine, "alice") as conn:
        pid = await conn.scalar(sa.text("SELECT pg_backend_pid()"))
        await conn.commit()
        async with pg_engine.connect() as killer:
            await killer.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    # The server dropped the session (and its lock); the next user gets it at once.
    assert not await _held_elsewhere(pg_engine, "alice")
    async with user_transaction(pg_engine, "alice") as conn:
        assert await conn.scalar(sa.text("SELECT 1")) == 1


async def test_lock_timeout_fails_fast_with_a_retryable_sqlstate(pg_engine: AsyncEngine) -> None:
    async with pg_engine.begin() as setup:
        await setup.execute(sa.text("CREATE TABLE locked (id int PRIMARY KEY)"))
        await setup.execute(sa.text("INSERT INTO locked VALUES (1)"))
    async with pg_engine.connect() as holder:
        await holder.execute(sa.text("SELECT * FROM locked FOR UPDATE"))
        with pytest.raises(DBAPIError) as info:
            async with user_transaction(pg_engine, "alice", lock_timeout=0.05) as conn:
                await conn.execute(sa.text("SELECT * FROM locked FOR UPDATE"))
        assert sqlstate_of(info.value) == "55P03"
        assert is_retryable_error(info.value)
        await holder.rollback()


async def test_run_with_retry_retries_only_retryable_errors(pg_engine: AsyncEngine) -> None:
    calls = 0

    async def deadlocking() -> str:
        nonlocal calls
        calls += 1
        async with pg_engine.begin() as conn:
            if calls < 3:
                await conn.execute(
                    sa.text("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01'; END $$")
                )
            return "ok"

    assert await run_with_retry(deadlocking, attempts=3, backoff=0.001) == "ok"
    assert calls == 3

    calls = 0
    with pytest.raises(DBAPIError):
        await run_with_retry(deadlocking, attempts=2, backoff=0.001)
    assert calls == 2

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("not a database error")

    calls = 0
    with pytest.raises(ValueError, match="not a database"):
        await run_with_retry(broken, attempts=5, backoff=0.001)
    assert calls == 1
