"""``GET /metrics`` on a Litestar app serving the real sync routes over PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.litestar import JWTConfig, metrics_route
from oversync_sa.litestar.plugin import OversyncPlugin
from oversync_sa.metrics.prometheus import PrometheusObserver
from tests.http.http_support import SECRET, app_client, headers, uid, user_row
from tests.metrics._support import observed_service, sample

pytestmark = pytest.mark.postgres


@pytest.fixture
async def served(
    pg_engine: AsyncEngine,
) -> AsyncIterator[tuple[httpx.AsyncClient, PrometheusObserver]]:
    service, observer = await observed_service(pg_engine)
    app = Litestar(
        route_handlers=[metrics_route(observer.registry, service=service)],
        plugins=[OversyncPlugin(service, jwt=JWTConfig(key=SECRET))],
    )
    async with app_client(app) as client:
        yield client, observer


def _values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_route_serves_the_text_exposition(
    served: tuple[httpx.AsyncClient, PrometheusObserver],
) -> None:
    client, observer = served
    auth = headers("alice")
    assert (await client.post("/sync/connect", json={}, headers=auth)).status_code == 200
    created = (await client.post(
        "/sync/push-sessions", json={"source_bundle_id": 1, "planned_row_count": 1},
        headers=auth,
    )).json()
    push_id = created["push_id"]
    chunk = await client.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": [user_row(uid(1))]}, headers=auth,
    )
    assert chunk.status_code == 200
    commit = await client.post(f"/sync/push-sessions/{push_id}/commit", headers=auth)
    assert commit.status_code == 200
    assert (await client.get("/sync/pull", headers=auth)).status_code == 200

    scrape = await client.get("/metrics")

    assert scrape.status_code == 200
    assert scrape.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    values = _values(scrape.text)
    # The HTTP routes go through the SyncService facade, so they are observed.
    for operation in ("connect", "push_create", "push_chunk", "push_commit", "pull"):
        key = ("oversync_operations_total", (("operation", operation), ("outcome", "ok")))
        assert values[key] == 1, operation
    assert values[("oversync_push_rows_committed_total", ())] == 1
    # The scrape refreshed the retention lag: alice has one bundle above a floor of 0.
    assert values[("oversync_retained_floor_lag_max_bundles", ())] == 1
    assert values[("oversync_retained_floor_lag_bundles_gcount", ())] == 1
    # Exactly what the registry holds, nothing else rendered.
    assert sample(observer.registry, "oversync_push_bundles_committed_total") == 1


async def test_openmetrics_is_served_when_asked_for(
    served: tuple[httpx.AsyncClient, PrometheusObserver],
) -> None:
    client, _ = served
    accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
    scrape = await client.get("/metrics", headers=accept)
    assert scrape.headers["content-type"].startswith("application/openmetrics-text")
    assert scrape.text.endswith("# EOF\n")
    assert "oversync_watch_subscribers" in scrape.text


async def test_http_errors_are_counted_with_their_wire_code(
    served: tuple[httpx.AsyncClient, PrometheusObserver],
) -> None:
    client, observer = served
    pulled = await client.get("/sync/pull", headers=headers("nobody"))
    assert pulled.json()["error"] == "scope_uninitialized"
    assert sample(
        observer.registry, "oversync_operations_total",
        operation="pull", outcome="scope_uninitialized",
    ) == 1


async def test_metrics_route_is_not_in_the_openapi_schema(
    served: tuple[httpx.AsyncClient, PrometheusObserver],
) -> None:
    client, _ = served
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/metrics" not in schema["paths"]
    assert "/sync/pull" in schema["paths"]


async def test_metrics_route_defaults_to_the_global_registry() -> None:
    app = Litestar(route_handlers=[metrics_route()])
    async with app_client(app) as client:
        scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    # prometheus_client's default registry always carries the process collectors.
    assert any(f.name.startswith("python_") for f in text_string_to_metric_families(scrape.text))
