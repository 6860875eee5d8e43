"""The reference server exports metrics on /metrics only when OVERSYNC_METRICS asks for it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.litestar_server.app import ExampleServer, create_app
from examples.litestar_server.database import create_business_schema
from examples.litestar_server.settings import Settings
from oversync_sa.metrics.prometheus import PrometheusObserver
from tests.http.http_support import app_client

pytestmark = pytest.mark.postgres

SETTINGS = Settings(jwt_secret="example-metrics-secret-with-enough-bytes")


def test_metrics_flag_from_env() -> None:
    assert Settings.from_env({}).metrics is False
    assert Settings.from_env({"OVERSYNC_METRICS": "true"}).metrics is True
    assert Settings.from_env({"OVERSYNC_METRICS": "0"}).metrics is False


async def _server(engine: AsyncEngine, settings: Settings) -> ExampleServer:
    server = ExampleServer.create(engine, settings)
    await create_business_schema(engine, settings.business_schema)
    await server.service.bootstrap()
    return server


async def test_metrics_enabled_serves_observed_operations(pg_engine: AsyncEngine) -> None:
    server = await _server(pg_engine, replace(SETTINGS, metrics=True))
    observer = server.service.config.observer
    assert isinstance(observer, PrometheusObserver)
    assert server.service.config.stage_metrics == observer.stage_recorder
    async with app_client(create_app(server)) as client:
        token = (await client.post("/dummy-signin", json={"user": "u1"})).json()["token"]
        auth = {"Authorization": f"Bearer {token}", "Oversync-Source-ID": "dev-1"}
        assert (await client.post("/sync/connect", json={}, headers=auth)).status_code == 200
        scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    assert 'oversync_operations_total{operation="connect",outcome="ok"} 1.0' in scrape.text
    # CORS is added to every answer of the example app, /metrics included.
    assert scrape.headers["access-control-allow-origin"] == "*"


async def test_metrics_disabled_by_default(pg_engine: AsyncEngine) -> None:
    server = await _server(pg_engine, SETTINGS)
    assert server.service.config.observer is None
    async with app_client(create_app(server)) as client:
        assert (await client.get("/metrics")).status_code == 404
