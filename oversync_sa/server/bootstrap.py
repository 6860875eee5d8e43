"""The four bootstrap steps of SERVER.md §2.2 to §2.5, run by ``SyncService.bootstrap()``.

1. Validate every registered table (collecting all violations) — :mod:`.bootstrap_validation`.
2. Create or verify the ``sync`` layout in one advisory-locked transaction, retried on
   serialization failure, deadlock and lock-not-available — :mod:`.bootstrap_layout`.
3. Compute the parent-first dependency order (informational) — :mod:`.dependency_order`.
4. (Re)install the per-table triggers in their own advisory-locked transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar, cast

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from oversync_sa.errors import UnsupportedSchemaError
from oversync_sa.server.bootstrap_layout import acquire_bootstrap_lock, ensure_layout
from oversync_sa.server.bootstrap_validation import (
    SchemaFacts,
    collect_violations,
    fk_edges,
    load_schema_facts,
)
from oversync_sa.server.catalog_migration import migrate_table_catalog
from oversync_sa.server.config import RegisteredTable, ServiceConfig
from oversync_sa.server.dependency_order import dependency_order
from oversync_sa.server.locks import RETRYABLE_SQLSTATES, sqlstate_of
from oversync_sa.server.runtime_info import KeyType, RuntimeTable, SyncRuntime
from oversync_sa.server.triggers import install_triggers

__all__ = ["assign_table_ids", "run_bootstrap"]

_log = logging.getLogger("oversync_sa.server.bootstrap")

_ATTEMPTS: Final = 3
_BACKOFF_SECONDS: Final = 0.05

_T = TypeVar("_T")


def assign_table_ids(tables: Sequence[RegisteredTable]) -> dict[str, int]:
    """``table_id`` = 1-based position in the byte-wise sorted ``"schema.table"`` names (§1.1)."""
    ordered = sorted({t.name for t in tables}, key=lambda n: n.encode("utf-8"))
    return {name: i for i, name in enumerate(ordered, start=1)}


async def _in_transaction(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[_T]]
) -> _T:
    """Run ``work`` in one transaction, retrying transient lock/serialisation failures."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except DBAPIError as exc:
            if attempt == _ATTEMPTS or sqlstate_of(exc) not in RETRYABLE_SQLSTATES:
                raise
            _log.warning("bootstrap transaction attempt %d failed transiently: %s", attempt, exc)
            await asyncio.sleep(_BACKOFF_SECONDS * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _runtime_tables(
    tables: Sequence[RegisteredTable], facts: SchemaFacts
) -> tuple[RuntimeTable, ...]:
    ids = assign_table_ids(tables)
    result = []
    for table in tables:
        key_type = facts.tables[table.name].columns[table.sync_key_column]
        result.append(
            RuntimeTable(
                schema=table.schema,
                table=table.table,
                key_column=table.sync_key_column,
                key_type=cast(KeyType, key_type),
                table_id=ids[table.name],
            )
        )
    return tuple(result)


async def run_bootstrap(engine: AsyncEngine, config: ServiceConfig) -> SyncRuntime:
    """Validate, create/verify the layout, order and install triggers; fail closed.

    Raises :class:`UnsupportedSchemaError` listing every problem found; database errors
    propagate unchanged.
    """
    tables = config.registered_tables
    facts = SchemaFacts(tables={})
    if tables:
        async with engine.connect() as conn:
            facts = await conn.run_sync(load_schema_facts, tables)
        violations = collect_violations(tables, facts)
        if violations:
            error = UnsupportedSchemaError(violations)
            _log.error("bootstrap rejected the registered tables: %s", error)
            raise error

    runtime_tables = _runtime_tables(tables, facts)

    async def _layout(conn: AsyncConnection) -> bool:
        if config.migrate_table_catalog:
            # The migration takes the same advisory lock; it must run before verification so a
            # changed registered set is renumbered instead of rejected.
            await acquire_bootstrap_lock(conn)
            change = await migrate_table_catalog(conn, runtime_tables)
            if change is not None:
                _log.info("table catalog migrated: %s", change)
        return await ensure_layout(conn, runtime_tables)

    created = await _in_transaction(engine, _layout)

    order = dependency_order(
        (t.name for t in tables), fk_edges(facts), config.dependency_overrides
    )
    if order:
        _log.info("registered table dependency order (parents first): %s", ", ".join(order))

    async def _install(conn: AsyncConnection) -> None:
        await acquire_bootstrap_lock(conn)
        await install_triggers(conn, runtime_tables)

    if runtime_tables:
        await _in_transaction(engine, _install)
    _log.info(
        "bootstrap complete (%s layout, %d table(s))",
        "created" if created else "verified",
        len(runtime_tables),
    )
    return SyncRuntime(
        tables=runtime_tables,
        column_types={name: dict(f.columns) for name, f in facts.tables.items()},
        dependency_order=order,
    )
