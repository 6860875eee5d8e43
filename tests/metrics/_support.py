"""Shared pieces of the metrics tests: a real service on the example schema, push helpers."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.business_models import BusinessBase
from oversync_sa.metadata import server_projection
from oversync_sa.metrics.prometheus import PrometheusObserver
from oversync_sa.server import Actor, ServiceConfig, SyncService
from oversync_sa.wire.models import (
    PushRequestRow,
    PushSessionChunkRequest,
    PushSessionCommitResponse,
    PushSessionCreateRequest,
)


async def observed_service(
    engine: AsyncEngine, **overrides: Any
) -> tuple[SyncService, PrometheusObserver]:
    """A bootstrapped service reporting to a PrometheusObserver on a registry of its own."""
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS business"))
        await conn.run_sync(server_projection(BusinessBase).create_all)
    observer = PrometheusObserver(CollectorRegistry())
    config = ServiceConfig.from_models(
        BusinessBase,
        schema="business",
        observer=observer,
        stage_metrics=observer.stage_recorder,
        **overrides,
    )
    service = SyncService(engine, config)
    await service.bootstrap()
    return service, observer


def user_row(key: uuid.UUID, name: str, *, base: int = 0, op: str = "INSERT") -> PushRequestRow:
    payload = {"id": str(key), "name": name, "email": f"{name}@example.com"}
    return PushRequestRow(
        schema="business",
        table="users",
        key={"id": str(key)},
        op=op,
        base_row_version=base,
        payload=msgspec.Raw(msgspec.json.encode(payload)),
    )


async def push(
    service: SyncService, actor: Actor, source_bundle_id: int, rows: list[PushRequestRow]
) -> PushSessionCommitResponse:
    """One push session: create, upload every row in one chunk, commit."""
    created = await service.create_push_session(
        actor, PushSessionCreateRequest(source_bundle_id=source_bundle_id,
                                        planned_row_count=len(rows))
    )
    await service.upload_push_chunk(
        actor, created.push_id, PushSessionChunkRequest(start_row_ordinal=0, rows=rows)
    )
    return await service.commit_push_session(actor, created.push_id)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0 when the series does not exist yet (counters start absent)."""
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
