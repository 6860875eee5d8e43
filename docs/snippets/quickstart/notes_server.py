"""notes_server.py: the sync server, a Litestar app (``uvicorn --factory notes_server:app``)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from litestar import Litestar
from notes_models import Base
from sqlalchemy.ext.asyncio import create_async_engine

from oversync_sa.litestar import JWTConfig
from oversync_sa.litestar.plugin import OversyncPlugin
from oversync_sa.metadata import server_projection
from oversync_sa.server import ServiceConfig, SyncService

JWT_SECRET = os.environ.get("JWT_SECRET", "change-me-to-at-least-32-random-bytes")


# --8<-- [start:create_app]
def create_app(database_url: str) -> Litestar:
    engine = create_async_engine(database_url)  # postgresql+asyncpg://...
    service = SyncService(engine, ServiceConfig.from_models(Base, schema="business"))

    @asynccontextmanager
    async def create_tables(_: Litestar) -> AsyncIterator[None]:
        # In production Alembic creates the tables (see "Alembic"); this keeps the demo short.
        async with engine.begin() as conn:
            await conn.execute(sa.schema.CreateSchema("business", if_not_exists=True))
            await conn.run_sync(server_projection(Base, schema="business").create_all)
        yield
        await engine.dispose()

    return Litestar(
        # The plugin bootstraps the service at startup (after create_tables) and drains it at
        # shutdown.
        plugins=[OversyncPlugin(service, jwt=JWTConfig(key=JWT_SECRET))],
        lifespan=[create_tables],
    )


# --8<-- [end:create_app]


def app() -> Litestar:
    return create_app(os.environ["DATABASE_URL"])
