"""Opt-in catalog migration at bootstrap: a changed registered set is renumbered, not rejected."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from oversync_sa.errors import UnsupportedSchemaError
from oversync_sa.server import ServiceConfig, SyncService
from tests.server.bootstrap.conftest import example_config


async def _catalog(service: SyncService) -> list[tuple[int, str]]:
    async with service.engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT table_id, table_name FROM sync.table_catalog ORDER BY table_id")
        )
        return [(int(r[0]), str(r[1])) for r in rows]


async def test_dropping_a_registered_table_fails_closed_without_opt_in(
    example_service: SyncService,
) -> None:
    tables = example_config().registered_tables[:-1]  # typed_rows no longer registered
    with pytest.raises(UnsupportedSchemaError) as info:
        await SyncService(
            example_service.engine, ServiceConfig(registered_tables=tables)
        ).bootstrap()
    assert info.value.violations[0].rule == "table_catalog"


async def test_opt_in_renumbers_the_catalog_and_bootstraps(example_service: SyncService) -> None:
    before = await _catalog(example_service)
    assert (7, "typed_rows") in before
    assert (8, "users") in before
    tables = example_config().registered_tables[:-1]
    service = SyncService(
        example_service.engine,
        ServiceConfig(registered_tables=tables, migrate_table_catalog=True),
    )
    runtime = await service.bootstrap()
    after = await _catalog(service)
    assert [name for _, name in after] == sorted(t.table for t in tables)
    assert (7, "users") in after
    assert runtime.by_name["business.users"].table_id == 7
    # A second opt-in bootstrap over the migrated catalog is a no-op.
    await service.bootstrap()
    assert await _catalog(service) == after
