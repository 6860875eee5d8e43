"""Helpers for the push tests: service factory, row builders and a push driver."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.business_models import REGISTER_ORDER, BusinessBase
from oversync_sa.metadata import server_projection
from oversync_sa.server import RegisteredTable, ServiceConfig, SyncService
from oversync_sa.server.connect import connect
from oversync_sa.server.push_commit import commit_push_session
from oversync_sa.server.push_sessions import create_push_session, upload_push_chunk
from oversync_sa.wire.models import (
    ConnectRequest,
    ConnectResolution,
    PushRequestRow,
    PushSessionChunkRequest,
    PushSessionCommitResponse,
    PushSessionCreateRequest,
    PushSessionCreateResponse,
)


async def make_service(engine: AsyncEngine, **overrides: Any) -> SyncService:
    """Create the example schema (once per database) and bootstrap a service over it."""
    async with engine.begin() as conn:
        exists = await conn.scalar(sa.text("SELECT to_regnamespace('business') IS NOT NULL"))
        if not exists:
            await conn.execute(sa.text("CREATE SCHEMA business"))
            await conn.run_sync(server_projection(BusinessBase).create_all)
    tables = tuple(RegisteredTable("business", t, "id") for t in REGISTER_ORDER)
    service = SyncService(engine, ServiceConfig(registered_tables=tables, **overrides))
    await service.bootstrap()
    return service


def uid(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


def row(
    table: str, key: str, op: str = "INSERT", base: int = 0, payload: Any = None, **extra: Any
) -> PushRequestRow:
    """A push row for ``business.<table>``; ``payload`` may be a dict, raw bytes or None."""
    raw = msgspec.Raw()
    if isinstance(payload, bytes):
        raw = msgspec.Raw(payload)
    elif payload is not None:
        raw = msgspec.Raw(msgspec.json.encode(payload))
    return PushRequestRow(
        schema=extra.get("schema", "business"), table=table, key=extra.get("raw_key", {"id": key}),
        op=op, base_row_version=base, payload=raw,
    )


async def initialize(service: SyncService, user: str, source: str = "dev-a") -> None:
    """Make ``user``'s scope INITIALIZED via an empty first connect."""
    resp = await connect(service, user, source, ConnectRequest(has_local_pending_rows=False))
    assert resp.resolution in (
        ConnectResolution.INITIALIZE_EMPTY, ConnectResolution.REMOTE_AUTHORITATIVE
    )


async def create(
    service: SyncService, user: str, source: str, sbid: int, planned: int, init_id: str = ""
) -> PushSessionCreateResponse:
    return await create_push_session(
        service, user, source,
        PushSessionCreateRequest(
            source_bundle_id=sbid, planned_row_count=planned, initialization_id=init_id
        ),
    )


async def chunk(
    service: SyncService, user: str, push_id: str, start: int, rows: Sequence[PushRequestRow],
    source: str = "dev-a",
) -> int:
    resp = await upload_push_chunk(
        service, user, source, push_id,
        PushSessionChunkRequest(start_row_ordinal=start, rows=list(rows)),
    )
    assert resp.push_id == push_id
    return resp.next_expected_row_ordinal


async def push(
    service: SyncService, user: str, source: str, sbid: int, rows: Sequence[PushRequestRow],
    *, chunk_size: int = 1000, init_id: str = "",
) -> PushSessionCommitResponse:
    """Create, upload in chunks and commit one bundle."""
    created = await create(service, user, source, sbid, len(rows), init_id)
    assert created.status == "staging", created
    for start in range(0, len(rows), chunk_size):
        await chunk(service, user, created.push_id, start, rows[start:start + chunk_size], source)
    return await commit_push_session(service, user, source, created.push_id)


async def fetch(engine: AsyncEngine, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(sa.text(statement), params)).all()]


async def committed_rows(engine: AsyncEngine, user: str, seq: int) -> list[tuple[str, str, int]]:
    """``(table, key text, op_code)`` of a committed bundle, in committed order."""
    rows = await fetch(
        engine,
        "SELECT tc.table_name, br.key_bytes, br.op_code FROM sync.bundle_rows br "
        "JOIN sync.user_state us USING (user_pk) JOIN sync.table_catalog tc USING (table_id) "
        "WHERE us.user_id = :u AND br.bundle_seq = :s ORDER BY br.row_ordinal",
        u=user, s=seq,
    )
    return [(t, str(uuid.UUID(bytes=bytes(k))), int(op)) for t, k, op in rows]
