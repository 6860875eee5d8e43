"""The PostgreSQL harness itself: a real server, isolated databases."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.testing import PostgresServer


async def test_engine_reaches_a_real_postgres(pg_engine: AsyncEngine) -> None:
    async with pg_engine.connect() as conn:
        version = (await conn.execute(sa.text("SHOW server_version_num"))).scalar_one()
        tz = (await conn.execute(sa.text("SHOW timezone"))).scalar_one()
    assert int(version) >= 140000
    assert tz in {"UTC", "Etc/UTC"}


async def test_databases_are_isolated(pg_server: PostgresServer, pg_engine: AsyncEngine) -> None:
    async with pg_engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE marker (x int)"))
    other = pg_server.create_database()
    try:
        from sqlalchemy.ext.asyncio import create_async_engine

        from oversync_sa.testing import sqlalchemy_url

        engine = create_async_engine(sqlalchemy_url(other))
        async with engine.connect() as conn:
            found = (
                await conn.execute(sa.text("SELECT to_regclass('public.marker') IS NOT NULL"))
            ).scalar_one()
        await engine.dispose()
        assert found is False
    finally:
        pg_server.drop_database(other)
