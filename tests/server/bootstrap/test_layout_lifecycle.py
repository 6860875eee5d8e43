"""Bootstrap step 2 (SERVER.md §2.3): idempotent, concurrent-safe and fail-closed."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import UnsupportedSchemaError
from oversync_sa.server import RegisteredTable, ServiceConfig, SyncService
from tests.server.bootstrap.conftest import EXAMPLE_DDL, example_config, run_ddl

_FINGERPRINT = sa.text(
    """SELECT string_agg(x, '|' ORDER BY x) FROM (
         SELECT c.oid::text || ':' || c.relname AS x FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sync'
         UNION ALL SELECT p.oid::text || ':' || p.proname FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'sync'
         UNION ALL SELECT row(t.*)::text FROM sync.table_catalog t
         UNION ALL SELECT row(m.*)::text FROM sync.meta m) s"""
)


async def _fingerprint(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        return str((await conn.execute(_FINGERPRINT)).scalar_one())


async def test_second_bootstrap_changes_nothing(example_service: SyncService) -> None:
    before = await _fingerprint(example_service.engine)
    again = SyncService(example_service.engine, example_config())
    runtime = await again.bootstrap()
    assert await _fingerprint(example_service.engine) == before
    assert runtime == example_service.runtime


async def test_concurrent_bootstraps_both_succeed(pg_engine: AsyncEngine) -> None:
    await run_ddl(pg_engine, EXAMPLE_DDL)
    services = [SyncService(pg_engine, example_config()) for _ in range(3)]
    runtimes = await asyncio.gather(*(s.bootstrap() for s in services))
    assert runtimes[0] == runtimes[1] == runtimes[2]
    async with pg_engine.connect() as conn:
        count = (await conn.execute(sa.text("SELECT count(*) FROM sync.table_catalog"))).scalar()
    assert count == 8


async def test_triggers_are_reinstalled_on_recreated_table(example_service: SyncService) -> None:
    engine = example_service.engine
    await run_ddl(
        engine,
        [
            "DROP TABLE business.typed_rows",
            "CREATE TABLE business.typed_rows (_sync_scope_id TEXT NOT NULL, id UUID NOT NULL,"
            " name TEXT NOT NULL, note TEXT NULL, count_value BIGINT NULL,"
            " enabled_flag BIGINT NOT NULL, rating DOUBLE PRECISION NULL, data BYTEA NULL,"
            " created_at TIMESTAMPTZ NULL, PRIMARY KEY (_sync_scope_id, id))",
        ],
    )
    await SyncService(engine, example_config()).bootstrap()
    async with engine.connect() as conn:
        triggers = (
            (
                await conn.execute(
                    sa.text(
                        "SELECT tgname FROM pg_trigger"
                        " WHERE tgrelid = 'business.typed_rows'::regclass"
                        " AND NOT tgisinternal ORDER BY tgname"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert triggers == ["oversync_bundle_capture_row", "oversync_bundle_owner_guard"]


async def _expect_unsupported(engine: AsyncEngine, config: ServiceConfig) -> UnsupportedSchemaError:
    with pytest.raises(UnsupportedSchemaError) as info:
        await SyncService(engine, config).bootstrap()
    return info.value


async def test_catalog_mismatch_fails_closed(example_service: SyncService) -> None:
    tables = example_config().registered_tables[:-1]
    error = await _expect_unsupported(
        example_service.engine, ServiceConfig(registered_tables=tables)
    )
    assert [v.table for v in error.violations] == ["sync.table_catalog"]
    assert "sync.table_catalog" in str(error)


async def test_catalog_key_column_change_fails(pg_engine: AsyncEngine) -> None:
    await run_ddl(
        pg_engine,
        [
            "CREATE TABLE t (_sync_scope_id TEXT NOT NULL, id UUID NOT NULL, code TEXT NOT NULL,"
            " PRIMARY KEY (_sync_scope_id, id), UNIQUE (_sync_scope_id, code))"
        ],
    )
    await SyncService(
        pg_engine, ServiceConfig(registered_tables=(RegisteredTable("", "t", "id"),))
    ).bootstrap()
    error = await _expect_unsupported(
        pg_engine, ServiceConfig(registered_tables=(RegisteredTable("", "t", "code"),))
    )
    assert error.violations[0].rule == "table_catalog"


@pytest.mark.parametrize(
    ("tamper", "rule"),
    [
        ("UPDATE sync.meta SET layout_name = 'other_layout'", "layout_meta"),
        ("UPDATE sync.meta SET protocol_label = 'v2'", "layout_meta"),
        ("DELETE FROM sync.meta", "layout_meta"),
        ("DROP TABLE sync.meta", "layout_markers"),
    ],
)
async def test_layout_marker_mismatch_fails_closed(
    pg_engine: AsyncEngine, tamper: str, rule: str
) -> None:
    await SyncService(pg_engine, ServiceConfig()).bootstrap()
    await run_ddl(pg_engine, [tamper])
    error = await _expect_unsupported(pg_engine, ServiceConfig())
    assert [v.rule for v in error.violations] == [rule]


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE sync.legacy (x int)",
        "CREATE FUNCTION sync.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ],
)
async def test_unknown_objects_in_sync_fail_closed(pg_engine: AsyncEngine, ddl: str) -> None:
    await run_ddl(pg_engine, ["CREATE SCHEMA sync", ddl])
    error = await _expect_unsupported(pg_engine, ServiceConfig())
    assert error.violations[0].rule == "layout_unknown"
    assert "unsupported layout" in str(error)


async def test_empty_sync_schema_is_adopted(pg_engine: AsyncEngine) -> None:
    await run_ddl(pg_engine, ["CREATE SCHEMA sync"])
    await SyncService(pg_engine, ServiceConfig()).bootstrap()
    async with pg_engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM sync.meta"))).scalar() == 1
