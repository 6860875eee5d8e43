"""Shared helpers of the HTTP tests: the example schema, an app over it, request builders."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
import pytest
import sqlalchemy as sa
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.business_models import REGISTER_ORDER, BusinessBase
from oversync_sa.litestar import JWTConfig, issue_token
from oversync_sa.litestar.plugin import OversyncPlugin
from oversync_sa.metadata import server_projection
from oversync_sa.server import BundleChangeWatchConfig, RegisteredTable, ServiceConfig, SyncService

SECRET: Final = "http-test-secret-of-at-least-32-bytes"
SOURCE: Final = "device-a"


async def make_service(engine: AsyncEngine, **overrides: Any) -> SyncService:
    """The §10.1 business schema, created once per database, and a bootstrapped service."""
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS business"))
        await conn.run_sync(server_projection(BusinessBase).create_all)
    tables = tuple(RegisteredTable("business", t, "id") for t in REGISTER_ORDER)
    overrides.setdefault("bundle_change_watch", BundleChangeWatchConfig(enabled=True))
    service = SyncService(engine, ServiceConfig(registered_tables=tables, **overrides))
    await service.bootstrap()
    return service


def make_app(service: SyncService, **plugin_options: Any) -> Litestar:
    """An app with the plugin and JWT auth (JSON errors), as a host would mount it."""
    plugin_options.setdefault("jwt", JWTConfig(key=SECRET))
    return Litestar(plugins=[OversyncPlugin(service, **plugin_options)])


@asynccontextmanager
async def app_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of ``app`` on the caller's event loop, without the app's lifespan.

    The lifespan runs in an anyio task group, which a pytest fixture cannot enter in one task
    and leave in another; the lifespan tests enter it inside the test itself.
    """
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


@pytest.fixture(name="service")
async def service_fixture(pg_engine: AsyncEngine) -> SyncService:
    """The ``service`` fixture of the HTTP and security suites: :func:`make_service`."""
    return await make_service(pg_engine)


@pytest.fixture(name="client")
async def client_fixture(service: SyncService) -> AsyncIterator[httpx.AsyncClient]:
    """The ``client`` fixture of the HTTP and security suites: httpx over an app of ``service``."""
    async with app_client(make_app(service)) as test_client:
        yield test_client


def headers(user: str = "alice", source: str = SOURCE) -> dict[str, str]:
    """Authorization and source headers of a valid actor."""
    return {
        "Authorization": f"Bearer {issue_token(user, SECRET)}",
        "Oversync-Source-ID": source,
    }


def uid(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


def user_row(key: str, name: str = "Ada", op: str = "INSERT", base: int = 0) -> dict[str, Any]:
    """A push row of ``business.users``; DELETE rows carry no payload."""
    row: dict[str, Any] = {
        "schema": "business",
        "table": "users",
        "key": {"id": key},
        "op": op,
        "base_row_version": base,
    }
    if op != "DELETE":
        row["payload"] = {"id": key, "name": name, "email": f"{name.lower()}@example.com"}
    return row
