"""Database set-up shared by the CLI tests."""

from __future__ import annotations

import asyncio
import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from oversync_sa.metadata import server_projection
from oversync_sa.server import ServiceConfig, SyncService
from oversync_sa.server.writes import BundleWriter, ScopeManager
from oversync_sa.testing import sqlalchemy_url
from tests.cli._models import Base

MODELS = "tests.cli._models:Base"


def create_tables(pg_url: str) -> None:
    """The server projection of :mod:`tests.cli._models` in schema ``business``."""

    async def work() -> None:
        engine = create_async_engine(sqlalchemy_url(pg_url))
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.schema.CreateSchema("business"))
                await conn.run_sync(server_projection(Base, schema="business").create_all)
        finally:
            await engine.dispose()

    asyncio.run(work())


def run_sql(pg_url: str, *statements: str) -> list[object]:
    """Execute ``statements`` in one transaction; the last one's first column is returned."""

    async def work() -> list[object]:
        engine = create_async_engine(sqlalchemy_url(pg_url))
        try:
            async with engine.begin() as conn:
                result = None
                for statement in statements:
                    result = await conn.execute(sa.text(statement))
                return list(result.scalars()) if result is not None and result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(work())


def commit_bundles(pg_url: str, per_user: dict[str, int]) -> None:
    """Bootstrap, then commit ``n`` server-originated bundles (one author each) per user."""

    async def work() -> None:
        engine = create_async_engine(sqlalchemy_url(pg_url))
        try:
            service = SyncService(engine, ServiceConfig.from_models(Base, schema="business"))
            await service.bootstrap()
            manager = ScopeManager(service)

            async def insert_author(writer: BundleWriter) -> None:
                await writer.connection.execute(
                    sa.text("INSERT INTO business.authors (id, name) VALUES (:id, 'a')"),
                    {"id": uuid.uuid4()},
                )

            for user, count in per_user.items():
                for _ in range(count):
                    await manager.exec_write(user, insert_author, writer_id="cli-test")
        finally:
            await engine.dispose()

    asyncio.run(work())
