"""Shared helpers for the bundle tests: business schema, service factory, write shortcuts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from oversync_sa.server import RegisteredTable, ServiceConfig, SyncService
from oversync_sa.server.finalize import CommittedBundle
from oversync_sa.server.writes import BundleWriter, ScopeManager

BUSINESS_DDL: tuple[str, ...] = (
    "CREATE SCHEMA business",
    """CREATE TABLE business.users (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL,
        post_count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (_sync_scope_id, id))""",
    """CREATE TABLE business.posts (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, title TEXT NOT NULL, author_id UUID,
        PRIMARY KEY (_sync_scope_id, id),
        CONSTRAINT posts_author_fk FOREIGN KEY (_sync_scope_id, author_id)
            REFERENCES business.users (_sync_scope_id, id) ON DELETE CASCADE
            DEFERRABLE INITIALLY IMMEDIATE)""",
    """CREATE TABLE business.tags (
        _sync_scope_id TEXT NOT NULL, code TEXT NOT NULL, label TEXT,
        PRIMARY KEY (_sync_scope_id, code))""",
    """CREATE TABLE business.typed_rows (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT, big BIGINT,
        small INTEGER, price NUMERIC(10, 2), rating DOUBLE PRECISION, enabled BOOLEAN,
        happened_at TIMESTAMPTZ, day DATE, data BYTEA, doc JSONB, raw_doc JSON, other UUID,
        PRIMARY KEY (_sync_scope_id, id))""",
    "CREATE TABLE business.audit (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL)",
    # A user trigger writing another registered table: its effect belongs to the same bundle.
    """CREATE FUNCTION business.count_posts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE business.users SET post_count = post_count + 1
        WHERE _sync_scope_id = NEW._sync_scope_id AND id = NEW.author_id;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER posts_count AFTER INSERT ON business.posts
        FOR EACH ROW EXECUTE FUNCTION business.count_posts()""",
)

REGISTERED = (
    RegisteredTable("business", "users", "id"),
    RegisteredTable("business", "posts", "id"),
    RegisteredTable("business", "tags", "code"),
    RegisteredTable("business", "typed_rows", "id"),
)

Writes = Callable[[BundleWriter], Awaitable[None]]


async def make_service(engine: AsyncEngine, **overrides: Any) -> SyncService:
    """Create the business schema (once per database) and bootstrap a service on it."""
    async with engine.begin() as conn:
        exists = await conn.scalar(sa.text("SELECT to_regnamespace('business') IS NOT NULL"))
        if not exists:
            for ddl in BUSINESS_DDL:
                await conn.execute(sa.text(ddl))
    service = SyncService(engine, ServiceConfig(registered_tables=REGISTERED, **overrides))
    await service.bootstrap()
    return service


def sql(statement: str) -> Writes:
    """A write callback running ``;``-separated Core statements in order.

    ``:scope`` is bound to the writer's user where a statement uses it.
    """

    async def run(writer: BundleWriter) -> None:
        for part in filter(None, (p.strip() for p in statement.split(";"))):
            params = {"scope": writer.user_id} if ":scope" in part else {}
            await writer.connection.execute(sa.text(part), params)

    return run


async def exec_write(
    service: SyncService, scope: str, writes: Writes, *, writer: str = "server"
) -> CommittedBundle:
    result = await ScopeManager(service).exec_write(scope, writes, writer_id=writer)
    return result.bundle


async def fetch(
    conn_or_engine: AsyncEngine | AsyncConnection, statement: str, **params: Any
) -> list[sa.Row[Any]]:
    if isinstance(conn_or_engine, AsyncEngine):
        async with conn_or_engine.connect() as conn:
            return list((await conn.execute(sa.text(statement), params)).all())
    return list((await conn_or_engine.execute(sa.text(statement), params)).all())
