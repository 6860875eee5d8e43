"""Helpers for the read-path tests: a small business schema, writes, actors, raw SQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import RegisteredTable, ServiceConfig, SyncService
from oversync_sa.server.finalize import CommittedBundle
from oversync_sa.server.writes import BundleWriter, ScopeManager

# table_ids by sorted name: blobs=1, notes=2, people=3.
BUSINESS_DDL: tuple[str, ...] = (
    "CREATE SCHEMA app",
    """CREATE TABLE app.people (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL,
        PRIMARY KEY (_sync_scope_id, id))""",
    """CREATE TABLE app.notes (
        _sync_scope_id TEXT NOT NULL, code TEXT NOT NULL, body TEXT,
        PRIMARY KEY (_sync_scope_id, code))""",
    """CREATE TABLE app.blobs (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, label TEXT, data BYTEA,
        PRIMARY KEY (_sync_scope_id, id))""",
)

REGISTERED = (
    RegisteredTable("app", "people", "id"),
    RegisteredTable("app", "notes", "code"),
    RegisteredTable("app", "blobs", "id"),
)

Writes = Callable[[BundleWriter], Awaitable[None]]

#: Text keys that need every kind of JSON escaping, plus characters that must stay unescaped.
ODD_KEYS = ('quote"d', "back\\slash", "line\nbreak\ttab", "ctl\x01\x1f\x7f", "é ü 😀 \u2028")


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: str
    source_id: str = "device-a"


async def make_service(engine: AsyncEngine, **overrides: Any) -> SyncService:
    """Create the schema once per database and bootstrap a service over it."""
    async with engine.begin() as conn:
        if not await conn.scalar(sa.text("SELECT to_regnamespace('app') IS NOT NULL")):
            for ddl in BUSINESS_DDL:
                await conn.execute(sa.text(ddl))
    service = SyncService(engine, ServiceConfig(registered_tables=REGISTERED, **overrides))
    await service.bootstrap()
    return service


def sql(statement: str, **params: Any) -> Writes:
    """A write callback running ``;``-separated statements; ``:scope`` binds the writer's user."""

    async def run(writer: BundleWriter) -> None:
        for part in filter(None, (p.strip() for p in statement.split(";"))):
            bound = {k: v for k, v in params.items() if f":{k}" in part}
            if ":scope" in part:
                bound["scope"] = writer.user_id
            await writer.connection.execute(sa.text(part), bound)

    return run


async def write(
    service: SyncService, scope: str, statement: str, *, writer: str = "server", **params: Any
) -> CommittedBundle:
    """Commit one bundle in ``scope`` (auto-initialising it) and return it."""
    result = await ScopeManager(service).exec_write(
        scope, sql(statement, **params), writer_id=writer
    )
    return result.bundle


def note_inserts(prefix: str, count: int) -> str:
    values = ", ".join(f"('{prefix}{i:04d}', 'body {i}')" for i in range(count))
    return f"INSERT INTO app.notes (code, body) VALUES {values}"


async def execute(engine: AsyncEngine, *statements: str, **params: Any) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(sa.text(statement), params)


async def scalar(engine: AsyncEngine, statement: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(sa.text(statement), params)


async def set_floor(engine: AsyncEngine, user_id: str, floor: int) -> None:
    await execute(
        engine,
        "UPDATE sync.user_state SET retained_bundle_floor = :floor WHERE user_id = :user_id",
        floor=floor,
        user_id=user_id,
    )
