"""Per-user advisory lock, lock_timeout and the retry helper (§3.6, §2.3)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from oversync_sa.server.locks import (
    TransactionControlError,
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


# --- the transaction-level lock sent with BEGIN (one round trip) -------------------------------


async def _backend_state(url: URL, pid: int) -> str | None:
    """``pid`` 's state, seen from a connection outside the engine's pool."""
    checker = create_async_engine(url, poolclass=NullPool)
    try:
        async with checker.connect() as conn:
            state = await conn.scalar(
                sa.text("SELECT state FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
            )
    finally:
        await checker.dispose()
    return None if state is None else str(state)


async def _busy_backends(engine: AsyncEngine) -> int:
    """Other backends of this database that are not idle (e.g. left inside a transaction)."""
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state <> 'idle'"
                )
            )
        )


@pytest.mark.parametrize("user", ["o'brien", "back\\slash", "mixed\\'\"$$--;", "üñí ✓"])
async def test_quoted_user_ids_lock_their_own_key(pg_engine: AsyncEngine, user: str) -> None:
    async with user_transaction(pg_engine, user) as conn:
        assert await _held_elsewhere(pg_engine, user)
        assert not await _held_elsewhere(pg_engine, user + "x")
        assert await conn.scalar(sa.text("SELECT 1")) == 1
    assert not await _held_elsewhere(pg_engine, user)


async def test_nul_in_user_id_fails_with_postgres_error_and_leaves_no_transaction(
    pg_engine: AsyncEngine,
) -> None:
    with pytest.raises(DBAPIError):
        async with user_transaction(pg_engine, "a\x00b"):
            pytest.fail("the body must not run")
    # Every pooled connection is idle, none holds a transaction.
    assert await _busy_backends(pg_engine) == 0


async def test_connection_goes_back_to_the_pool_transactional_again(
    pg_engine: AsyncEngine,
) -> None:
    async with user_transaction(pg_engine, "alice") as conn:
        pid = await conn.scalar(sa.text("SELECT pg_backend_pid()"))
        await conn.execute(sa.text("CREATE TABLE t_kept (x int)"))
    assert await _backend_state(pg_engine.url, pid) == "idle"
    # The pool's next user of that connection gets ordinary transactions, not AUTOCOMMIT.
    for _ in range(6):
        async with pg_engine.connect() as conn:
            if await conn.scalar(sa.text("SELECT pg_backend_pid()")) != pid:
                continue
            await conn.execute(sa.text("INSERT INTO t_kept VALUES (1)"))
            await conn.rollback()
            assert await conn.scalar(sa.text("SELECT count(*) FROM t_kept")) == 0
            break
    else:
        pytest.fail("the pooled connection was not handed out again")


async def test_deferred_constraints_fail_at_commit_as_sqlalchemy_errors(
    pg_engine: AsyncEngine,
) -> None:
    async with pg_engine.begin() as setup:
        await setup.execute(sa.text("CREATE TABLE p (id int PRIMARY KEY)"))
        await setup.execute(
            sa.text("CREATE TABLE c (id int, p int REFERENCES p DEFERRABLE INITIALLY IMMEDIATE)")
        )
    # Child before parent: fine when deferred.
    async with user_transaction(pg_engine, "alice", defer_constraints=True) as conn:
        await conn.execute(sa.text("INSERT INTO c VALUES (1, 7)"))
        await conn.execute(sa.text("INSERT INTO p VALUES (7)"))
    # A dangling child is refused at COMMIT, translated like any SQLAlchemy error.
    with pytest.raises(IntegrityError) as info:
        async with user_transaction(pg_engine, "alice", defer_constraints=True) as conn:
            await conn.execute(sa.text("INSERT INTO c VALUES (2, 8)"))
    assert sqlstate_of(info.value) == "23503"
    assert not await _held_elsewhere(pg_engine, "alice")
    # Without the option the same write fails at once.
    with pytest.raises(IntegrityError):
        async with user_transaction(pg_engine, "alice") as conn:
            await conn.execute(sa.text("INSERT INTO c VALUES (3, 9)"))
    async with pg_engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM c")) == 1


async def test_lock_timeout_does_not_apply_to_waiting_for_the_user(
    pg_engine: AsyncEngine,
) -> None:
    inside = asyncio.Event()

    async def holder() -> None:
        async with user_transaction(pg_engine, "alice"):
            inside.set()
            await asyncio.sleep(0.3)

    async def waiter() -> str:
        await inside.wait()
        async with user_transaction(pg_engine, "alice", lock_timeout=0.05) as conn:
            return str(await conn.scalar(sa.text("SELECT current_setting('lock_timeout')")))

    _, setting = await asyncio.gather(holder(), waiter())
    assert setting == "50ms"


async def test_cancelled_while_waiting_for_the_lock_leaves_nothing_behind(
    pg_engine: AsyncEngine,
) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with user_transaction(pg_engine, "alice"):
            inside.set()
            await release.wait()

    holding = asyncio.create_task(holder())
    await inside.wait()

    async def waiter() -> None:
        async with user_transaction(pg_engine, "alice"):
            pytest.fail("must not get the lock while it is held")

    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    await holding
    assert not await _held_elsewhere(pg_engine, "alice")
    assert await _busy_backends(pg_engine) == 0
    async with user_transaction(pg_engine, "alice") as conn:
        assert await conn.scalar(sa.text("SELECT 1")) == 1


async def test_commit_on_a_killed_connection_raises_and_discards_it(
    pg_engine: AsyncEngine,
) -> None:
    pids: list[int] = []

    async def killed_under_commit() -> None:
        async with user_transaction(pg_engine, "alice") as conn:
            pids.append(await conn.scalar(sa.text("SELECT pg_backend_pid()")))
            async with pg_engine.connect() as killer:
                await killer.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pids[0]})
            await asyncio.sleep(0.1)

    with pytest.raises(DBAPIError):
        await killed_under_commit()
    pid = pids[0]
    assert not await _held_elsewhere(pg_engine, "alice")
    for _ in range(3):
        async with user_transaction(pg_engine, "alice") as conn:
            assert await conn.scalar(sa.text("SELECT pg_backend_pid()")) != pid


async def test_session_unlock_refuses_a_transaction_opened_behind_sqlalchemy(
    pg_engine: AsyncEngine,
) -> None:
    async with user_lock(pg_engine, "alice") as conn:
        pid = await conn.scalar(sa.text("SELECT pg_backend_pid()"))
        await conn.commit()
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("BEGIN")
    # The unlock would have run inside that transaction: the connection was discarded instead,
    # which ended its session and released the lock.
    assert not await _held_elsewhere(pg_engine, "alice")
    assert await _backend_state(pg_engine.url, pid) is None


@pytest.mark.parametrize("call", ["rollback", "commit"])
async def test_transaction_control_inside_the_body_rolls_back_and_raises(
    pg_engine: AsyncEngine, call: str
) -> None:
    async with pg_engine.begin() as setup:
        await setup.execute(sa.text("CREATE TABLE t_control (x int)"))

    async def meddling() -> None:
        async with user_transaction(pg_engine, "alice") as conn:
            await conn.execute(sa.text("INSERT INTO t_control VALUES (1)"))
            await getattr(conn, call)()
            await conn.execute(sa.text("INSERT INTO t_control VALUES (2)"))

    with pytest.raises(TransactionControlError, match=rf"{call}\(\) called .* 'alice'"):
        await meddling()
    async with pg_engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM t_control")) == 0
    assert not await _held_elsewhere(pg_engine, "alice")
    assert await _busy_backends(pg_engine) == 0


async def test_commits_on_other_connections_of_the_engine_are_not_transaction_control(
    pg_engine: AsyncEngine,
) -> None:
    # The recording listeners are the engine's, so they hear every connection's commit.
    async with pg_engine.begin() as setup:
        await setup.execute(sa.text("CREATE TABLE t_other (x int)"))
    async with user_transaction(pg_engine, "alice") as conn:
        await conn.execute(sa.text("INSERT INTO t_other VALUES (1)"))
        async with pg_engine.connect() as other:
            await other.execute(sa.text("INSERT INTO t_other VALUES (2)"))
            await other.commit()
            await other.execute(sa.text("SELECT 1"))
            await other.rollback()
    async with user_transaction(pg_engine, "bob") as conn:
        await conn.execute(sa.text("INSERT INTO t_other VALUES (3)"))
    async with pg_engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM t_other")) == 3


async def test_a_caught_statement_error_in_a_savepoint_is_not_transaction_control(
    pg_engine: AsyncEngine,
) -> None:
    async with pg_engine.begin() as setup:
        await setup.execute(sa.text("CREATE TABLE t_saved (x int PRIMARY KEY)"))
    async with user_transaction(pg_engine, "alice") as conn:
        await conn.execute(sa.text("INSERT INTO t_saved VALUES (1)"))
        with pytest.raises(IntegrityError):
            async with conn.begin_nested():
                await conn.execute(sa.text("INSERT INTO t_saved VALUES (1)"))
        await conn.execute(sa.text("INSERT INTO t_saved VALUES (2)"))
    async with pg_engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM t_saved")) == 2


async def test_failing_to_open_discards_the_connection(pg_engine: AsyncEngine) -> None:
    inside, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with user_transaction(pg_engine, "alice"):
            inside.set()
            await release.wait()

    async def waiter() -> None:
        async with user_transaction(pg_engine, "alice"):
            pytest.fail("must not get the lock while it is held")

    holding = asyncio.create_task(holder())
    await inside.wait()
    waiting = asyncio.create_task(waiter())
    waiter_pid = None
    for _ in range(50):
        await asyncio.sleep(0.02)
        async with pg_engine.connect() as probe:
            waiter_pid = await probe.scalar(
                sa.text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            )
        if waiter_pid is not None:
            break
    assert waiter_pid is not None
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    await holding
    # Whether BEGIN or the lock had taken effect is unknown after a cancel mid-acquire: the
    # waiter's session was closed rather than handed back to the pool.
    gone = False
    for _ in range(50):
        if await _backend_state(pg_engine.url, int(waiter_pid)) is None:
            gone = True
            break
        await asyncio.sleep(0.02)
    assert gone


async def test_a_connection_lost_inside_the_body_is_not_reported_committed(
    pg_engine: AsyncEngine,
) -> None:
    async with pg_engine.begin() as setup:
        await setup.execute(sa.text("CREATE TABLE t_lost (x int)"))

    async def lost() -> None:
        async with user_transaction(pg_engine, "alice") as conn:
            await conn.execute(sa.text("INSERT INTO t_lost VALUES (1)"))
            # What SQLAlchemy does itself when it sees the connection drop mid-statement.
            await conn.invalidate()

    with pytest.raises(ConnectionError, match="not committed"):
        await lost()
    async with pg_engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM t_lost")) == 0
    assert not await _held_elsewhere(pg_engine, "alice")
