"""Capabilities (§6.4) and /syncx status/health (§6.5)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import HealthFailedError, HistoryPrunedError, StatusFailedError
from oversync_sa.server import BundleChangeWatchConfig, ServiceConfig, SyncService
from oversync_sa.server.capabilities import build_capabilities, capabilities
from oversync_sa.server.pull import pull
from oversync_sa.server.status import health, status
from oversync_sa.wire.models import SyncFeatures
from tests.server.reading._support import (
    REGISTERED,
    Actor,
    execute,
    note_inserts,
    set_floor,
    write,
)

FLAGS = sorted(SyncFeatures.__struct_fields__)


def _json(value: object) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(value))
    return decoded


def test_capabilities_shape_and_defaults() -> None:
    body = _json(build_capabilities(ServiceConfig(registered_tables=REGISTERED)))
    assert list(body) == [
        "protocol_version", "schema_version", "app_name", "registered_tables",
        "registered_table_specs", "features", "bundle_limits",
    ]
    assert (body["protocol_version"], body["schema_version"]) == ("v1", 1)
    assert body["registered_tables"] == ["app.blobs", "app.notes", "app.people"]
    assert body["registered_table_specs"][1] == {
        "schema": "app", "table": "notes", "sync_key_columns": ["code"]
    }
    features = body["features"]
    assert list(features) == FLAGS
    assert len(FLAGS) == 20
    assert "push_sessions" not in features
    assert features["connect_lifecycle"] is True
    assert features["server_checkpoint_tracking"] is False
    assert features["bundle_change_watch"] is False
    assert sum(features.values()) == 18
    assert body["bundle_limits"] == {
        "max_bundles_per_pull": 5000,
        "default_rows_per_push_chunk": 1000,
        "max_rows_per_push_chunk": 5000,
        "push_session_ttl_seconds": 900,
        "default_rows_per_committed_bundle_chunk": 1000,
        "max_rows_per_committed_bundle_chunk": 5000,
        "default_rows_per_snapshot_chunk": 1000,
        "max_rows_per_snapshot_chunk": 5000,
        "snapshot_session_ttl_seconds": 900,
        "initialization_lease_ttl_seconds": 900,
    }


def test_capabilities_omissions_and_configured_limits() -> None:
    config = ServiceConfig(
        app_name="",
        max_rows_per_bundle=7,
        max_bytes_per_bundle=-1,
        max_rows_per_snapshot_session=10,
        max_bytes_per_snapshot_session=-5,
        push_session_ttl=timedelta(seconds=61, milliseconds=900),
    )
    body = _json(build_capabilities(config))
    assert "app_name" not in body
    assert "registered_tables" not in body
    assert "registered_table_specs" not in body
    limits = body["bundle_limits"]
    assert (limits["max_rows_per_bundle"], limits["max_bytes_per_bundle"]) == (7, -1)
    assert limits["max_rows_per_snapshot_session"] == 10
    assert "max_bytes_per_snapshot_session" not in limits
    assert limits["push_session_ttl_seconds"] == 61


async def test_watch_flag_follows_config_and_policy() -> None:
    enabled = ServiceConfig(bundle_change_watch=BundleChangeWatchConfig(enabled=True))
    alice, bob = Actor("alice"), Actor("bob")

    async def only_alice(actor: Any) -> bool:
        await asyncio.sleep(0)
        return bool(actor.user_id == "alice")

    def deny(actor: Any) -> bool:
        return False

    def watch(body: Any) -> bool:
        return bool(body.features.bundle_change_watch)

    assert watch(await capabilities(enabled))
    assert watch(await capabilities(enabled, alice, watch_policy=only_alice))
    assert not watch(await capabilities(enabled, bob, watch_policy=only_alice))
    assert not watch(await capabilities(enabled, bob, watch_policy=deny))
    assert watch(await capabilities(enabled, None, watch_policy=deny))
    # Disabled stays disabled whatever the policy says.
    assert not watch(await capabilities(ServiceConfig(), alice, watch_policy=lambda a: True))


async def test_status_of_a_fresh_service(service: SyncService) -> None:
    body = _json(await status(service))
    assert list(body)[:8] == [
        "status", "version", "app_name", "lifecycle", "accepting_operations",
        "inflight_operations", "registered_tables", "features",
    ]
    assert body["status"] == "healthy"
    assert body["lifecycle"] == "running"
    assert body["accepting_operations"] is True
    assert body["inflight_operations"] == 0
    assert body["registered_tables"] == ["app.blobs", "app.notes", "app.people"]
    assert all(v == 0 for k, v in body.items() if k.endswith(("_count", "_max", "_min", "_bytes")))
    assert (await health(service))[1] == 200


async def test_status_counters_and_aggregates(service: SyncService) -> None:
    for i in range(3):
        await write(service, "alice", note_inserts(f"a{i}-", 2))
    await write(service, "bob", note_inserts("b", 1))
    await set_floor(service.engine, "alice", 1)
    with pytest.raises(HistoryPrunedError):
        await pull(service, Actor("alice"), after_bundle_seq=1)
    with pytest.raises(DBAPIError):  # a registered write outside bundle context
        await execute(
            service.engine, "INSERT INTO app.notes (_sync_scope_id, code) VALUES ('x', 'y')"
        )
    body = await status(service)
    assert body.latest_bundle_seq_max == 3
    assert (body.retained_bundle_floor_min, body.retained_bundle_floor_max) == (0, 1)
    assert (body.retained_bundle_window_min, body.retained_bundle_window_max) == (1, 2)
    assert body.history_pruned_error_count == 1
    assert body.rejected_registered_write_count == 1
    assert body.accepted_push_replay_count == 0
    assert body.committed_bundle_count == 4
    async with service.engine.connect() as conn:
        total = await conn.scalar(text("SELECT sum(byte_count) FROM sync.bundle_log"))
    assert body.committed_bundle_bytes == total


async def test_floor_ahead_makes_health_503(service: SyncService) -> None:
    await write(service, "alice", note_inserts("a", 1))
    # The layout's check constraint forbids this state; drop it to simulate a corrupt row.
    await execute(
        service.engine,
        "ALTER TABLE sync.user_state DROP CONSTRAINT user_state_retained_floor_chk",
        "UPDATE sync.user_state SET retained_bundle_floor = 5",
    )
    body, code = await health(service)
    assert (body.status, body.user_state_retention_floor_ahead_count, code) == (
        "unhealthy", 1, 503
    )
    assert (await status(service)).status == "unhealthy"


async def test_lifecycle_is_reported_while_draining(service: SyncService) -> None:
    async with service.operation():
        assert (await status(service)).inflight_operations == 1
        closing = asyncio.create_task(service.close())
        await asyncio.sleep(0)
        body, code = await health(service)
        assert (body.lifecycle, body.accepting_operations, code) == ("shutting_down", False, 503)
    await closing
    assert (await status(service)).lifecycle == "closed"


async def test_unbootstrapped_service_reports_zeros(pg_engine: AsyncEngine) -> None:
    body = await status(SyncService(pg_engine, ServiceConfig()))
    assert (body.committed_bundle_count, body.history_pruned_error_count) == (0, 0)


async def test_query_failure_is_status_failed(service: SyncService) -> None:
    await execute(service.engine, "DROP TABLE sync.bundle_log CASCADE")
    with pytest.raises(StatusFailedError):
        await status(service)
    with pytest.raises(HealthFailedError):
        await health(service)
