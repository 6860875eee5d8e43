"""The request path's statements sent to asyncpg directly (oversync_sa.server.fastsql).

Same transaction, same rows and same SQLAlchemy errors as ``conn.execute`` would give.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from oversync_sa.server import fastsql
from oversync_sa.server.locks import sqlstate_of
from oversync_sa.testing import sqlalchemy_url

INSERT = sa.text("INSERT INTO t_fast (k, v) VALUES (:k, :v) RETURNING k, v")
COUNT = sa.text("SELECT count(*) FROM t_fast")


@pytest.fixture
async def table(pg_engine: AsyncEngine) -> AsyncEngine:
    async with pg_engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t_fast (k int PRIMARY KEY, v text NOT NULL)"))
    return pg_engine


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(COUNT) or 0)


async def _autocommit(conn: AsyncConnection) -> None:
    await conn.execution_options(isolation_level="AUTOCOMMIT")


async def test_rows_come_back_by_position_and_by_name(table: AsyncEngine) -> None:
    async with table.connect() as conn:
        await _autocommit(conn)
        row = (await fastsql.execute(conn, INSERT, {"k": 1, "v": "one"})).one()
        assert (row[0], row[1]) == (1, "one")
        assert fastsql.mapping(row)["v"] == "one"
        again = sa.text("SELECT k, v FROM t_fast WHERE k = :k AND v = :v")
        assert (await fastsql.execute(conn, again, {"k": 1, "v": "one"})).scalar() == 1


async def test_a_parameter_used_twice_is_bound_once(table: AsyncEngine) -> None:
    twice = sa.text("SELECT CAST(:x AS int) + CAST(:y AS int) + CAST(:x AS int)")
    async with table.connect() as conn:
        await _autocommit(conn)
        assert (await fastsql.execute(conn, twice, {"x": 1, "y": 10})).scalar_one() == 12


async def test_the_result_methods_keep_sqlalchemys_rules(table: AsyncEngine) -> None:
    rows = sa.text("SELECT g FROM generate_series(1, :n) AS g")
    async with table.connect() as conn:
        await _autocommit(conn)
        assert (await fastsql.execute(conn, rows, {"n": 0})).one_or_none() is None
        assert (await fastsql.execute(conn, rows, {"n": 0})).scalar() is None
        with pytest.raises(NoResultFound):
            (await fastsql.execute(conn, rows, {"n": 0})).one()
        with pytest.raises(MultipleResultsFound):
            (await fastsql.execute(conn, rows, {"n": 2})).one_or_none()
        assert [r[0] for r in await fastsql.execute(conn, rows, {"n": 3})] == [1, 2, 3]
        assert (await fastsql.execute(conn, rows, {"n": 2})).first()[0] == 1


async def test_inside_a_hand_begun_transaction_it_is_that_transactions(
    table: AsyncEngine,
) -> None:
    async with table.connect() as conn:
        await _autocommit(conn)
        await conn.exec_driver_sql("BEGIN")
        await fastsql.execute(conn, INSERT, {"k": 1, "v": "one"})
        await conn.exec_driver_sql("ROLLBACK")
    assert await _count(table) == 0


async def test_a_sqlalchemy_transaction_not_yet_begun_at_the_driver_gets_the_statement(
    table: AsyncEngine,
) -> None:
    # Not AUTOCOMMIT and no BEGIN sent yet: sent to asyncpg, the INSERT would autocommit.
    async with table.connect() as conn:
        await fastsql.execute(conn, INSERT, {"k": 1, "v": "one"})
        await conn.rollback()
    assert await _count(table) == 0
    async with table.connect() as conn:
        await fastsql.execute(conn, INSERT, {"k": 2, "v": "two"})
        await conn.commit()
    assert await _count(table) == 1


async def test_a_statement_without_rows_through_sqlalchemy_gives_no_rows(
    table: AsyncEngine,
) -> None:
    plain = sa.text("INSERT INTO t_fast (k, v) VALUES (:k, :v)")
    async with table.connect() as conn:
        assert (await fastsql.execute(conn, plain, {"k": 1, "v": "one"})).all() == ()
        await conn.commit()
    assert await _count(table) == 1


async def test_errors_hide_parameters_when_the_engine_does(pg_url: str, table: AsyncEngine) -> None:
    hidden = create_async_engine(sqlalchemy_url(pg_url), hide_parameters=True)
    try:
        async with hidden.connect() as conn:
            await _autocommit(conn)
            await fastsql.execute(conn, INSERT, {"k": 1, "v": "secret-one"})
            with pytest.raises(IntegrityError) as duplicate:
                await fastsql.execute(conn, INSERT, {"k": 1, "v": "secret-two"})
        assert "secret-two" not in str(duplicate.value)
        assert "hidden due to hide_parameters" in str(duplicate.value)
    finally:
        await hidden.dispose()


async def test_typed_binds_are_left_to_sqlalchemy(table: AsyncEngine) -> None:
    typed = sa.text("SELECT CAST(:doc AS jsonb) -> 'a'").bindparams(
        sa.bindparam("doc", type_=sa.JSON)
    )
    async with table.connect() as conn:
        await _autocommit(conn)
        # The JSON type serialises the dict; asyncpg alone would not know how to send it.
        assert (await fastsql.execute(conn, typed, {"doc": {"a": [1]}})).scalar() == [1]


@pytest.mark.parametrize(
    ("statement", "params", "sqlstate"),
    [
        (INSERT, {"k": 1, "v": "again"}, "23505"),
        (sa.text("INSERT INTO t_fast (k, v) VALUES (:k, NULL)"), {"k": 5}, "23502"),
        (sa.text("SELECT CAST(CAST(:x AS text) AS int)"), {"x": "no"}, "22P02"),
        (sa.text("SELECT * FROM t_missing WHERE k = :k"), {"k": 1}, "42P01"),
    ],
)
async def test_errors_are_the_ones_sqlalchemy_raises(
    table: AsyncEngine, statement: sa.TextClause, params: dict[str, object], sqlstate: str
) -> None:
    async with table.connect() as conn:
        await _autocommit(conn)
        await fastsql.execute(conn, INSERT, {"k": 1, "v": "one"})
        with pytest.raises(DBAPIError) as through_sqlalchemy:
            await conn.execute(statement, params)
        with pytest.raises(DBAPIError) as direct:
            await fastsql.execute(conn, statement, params)
        assert type(direct.value) is type(through_sqlalchemy.value)
        assert type(direct.value.orig) is type(through_sqlalchemy.value.orig)
        assert sqlstate_of(direct.value) == sqlstate
        assert str(direct.value.orig) == str(through_sqlalchemy.value.orig)
        assert not direct.value.connection_invalidated
        # The connection is still usable afterwards.
        assert (await fastsql.execute(conn, COUNT)).scalar() == 1


async def test_a_connection_that_dies_under_a_statement_is_invalidated(
    table: AsyncEngine,
) -> None:
    async with table.connect() as conn:
        await _autocommit(conn)
        pid = (await fastsql.execute(conn, sa.text("SELECT pg_backend_pid()"))).scalar()
        async with table.connect() as killer:
            await killer.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(DBAPIError) as lost:
            await fastsql.execute(conn, COUNT)
        assert lost.value.connection_invalidated
        assert conn.invalidated
        # As with conn.execute, the next statement reconnects.
        assert (await fastsql.execute(conn, COUNT)).scalar() == 0
        assert not conn.invalidated
        new_pid = (await fastsql.execute(conn, sa.text("SELECT pg_backend_pid()"))).scalar()
        assert new_pid != pid


async def test_run_commits_and_reports_a_deferred_violation_as_integrity_error(
    table: AsyncEngine,
) -> None:
    async with table.begin() as conn:
        await conn.execute(sa.text(
            "CREATE TABLE t_child (k int REFERENCES t_fast (k) DEFERRABLE INITIALLY DEFERRED)"
        ))
    async with table.connect() as conn:
        await _autocommit(conn)
        await fastsql.run(conn, "BEGIN")
        await fastsql.execute(conn, INSERT, {"k": 1, "v": "one"})
        await fastsql.run(conn, "COMMIT")
        await fastsql.run(conn, "BEGIN")
        await conn.execute(sa.text("INSERT INTO t_child VALUES (99)"))
        with pytest.raises(IntegrityError) as deferred:
            await fastsql.run(conn, "COMMIT")
        assert sqlstate_of(deferred.value) == "23503"
        assert not conn.invalidated
    assert await _count(table) == 1


async def test_statement_caches_off_as_behind_a_transaction_pooler(
    pg_url: str, table: AsyncEngine
) -> None:
    # docs/operations.md: the engine settings for PgBouncer in transaction mode.
    uncached = create_async_engine(
        sqlalchemy_url(pg_url),
        connect_args={"statement_cache_size": 0, "prepared_statement_cache_size": 0},
    )
    try:
        async with uncached.connect() as conn:
            await _autocommit(conn)
            for k in range(3):
                row = (await fastsql.execute(conn, INSERT, {"k": k, "v": f"v{k}"})).one()
                assert tuple(row) == (k, f"v{k}")
            assert await conn.scalar(COUNT) == 3
            prepared = await conn.scalar(sa.text("SELECT count(*) FROM pg_prepared_statements"))
            assert prepared == 0
    finally:
        await uncached.dispose()


async def test_driver_is_the_asyncpg_connection_and_reconnects_once_invalidated(
    table: AsyncEngine,
) -> None:
    async with table.connect() as conn:
        first = await fastsql.driver(conn)
        assert first is (await conn.get_raw_connection()).driver_connection
        assert await first.fetchval("SELECT 41 + 1") == 42
        await conn.invalidate()
        second = await fastsql.driver(conn)
        assert second is not first
        assert await second.fetchval("SELECT 1") == 1


async def test_an_error_the_dialect_does_not_translate_propagates_as_it_is(
    table: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with table.connect() as conn:
        await _autocommit(conn)
        driver = await fastsql.driver(conn)

        async def broken(*_args: object) -> None:
            raise OSError("socket trouble")

        monkeypatch.setattr(type(driver), "fetch", broken)
        with pytest.raises(OSError, match="socket trouble"):
            await fastsql.execute(conn, COUNT)
        assert not conn.invalidated  # the driver connection itself is still open
        monkeypatch.undo()
        assert (await fastsql.execute(conn, COUNT)).scalar() == 0
