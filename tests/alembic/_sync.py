"""Bootstrap a service for a model version and prove that writes are captured."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import SyncService
from oversync_sa.server.writes import BundleWriter, ScopeManager
from tests.alembic._models import VERSIONS, service_config

SCOPE = "alice"


async def bootstrap(engine: AsyncEngine, version: str) -> SyncService:
    service = SyncService(engine, service_config(version))
    await service.bootstrap()
    return service


@dataclass(frozen=True, slots=True)
class Written:
    """One committed server write: its bundle and the values written, ``table -> row``."""

    bundle_seq: int
    rows: dict[str, dict[str, Any]]


async def write(service: SyncService, version: str) -> Written:
    """Write one row per synced table of ``version`` through the bootstrapped ``service``."""
    extra, posts = VERSIONS[version]
    user_id = str(uuid.uuid4())
    user: dict[str, Any] = {"id": user_id, "name": "n"}
    if extra is not None:
        user[extra] = "x"
    rows = {"users": user}
    if posts is not None:
        post: dict[str, Any] = {"id": str(uuid.uuid4()), "title": "t"}
        if posts == "fk":
            post["author_id"] = user_id
        rows["posts"] = post

    async def insert(writer: BundleWriter) -> None:
        for table, row in rows.items():
            await writer.connection.execute(
                sa.text(
                    f"INSERT INTO business.{table} ({', '.join(row)})"
                    f" VALUES ({', '.join(':' + k for k in row)})"
                ),
                row,
            )

    result = await ScopeManager(service).exec_write(SCOPE, insert, writer_id="migrations")
    return Written(result.bundle.bundle_seq, rows)


async def captured_write(engine: AsyncEngine, version: str) -> dict[str, set[str]]:
    """Bootstrap ``version``, write one row per synced table, return the captured column sets."""
    service = await bootstrap(engine, version)
    try:
        written = await write(service, version)
    finally:
        await service.close()
    return await bundle_columns(engine, written.bundle_seq)


async def bundle_columns(engine: AsyncEngine, bundle_seq: int) -> dict[str, set[str]]:
    """``table -> payload keys`` of one committed bundle of :data:`SCOPE`, read from storage."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT c.table_name, r.payload_wire::text AS payload FROM sync.bundle_rows r"
                " JOIN sync.table_catalog c USING (table_id)"
                " JOIN sync.user_state u USING (user_pk)"
                " WHERE u.user_id = :scope AND r.bundle_seq = :seq ORDER BY r.row_ordinal"
            ),
            {"scope": SCOPE, "seq": bundle_seq},
        )
        return {row.table_name: set(json.loads(row.payload)) for row in rows}


def expected_columns(version: str) -> dict[str, set[str]]:
    extra, posts = VERSIONS[version]
    expected = {"users": {"id", "name"} | ({extra} if extra else set())}
    if posts is not None:
        expected["posts"] = {"id", "title"} | ({"author_id"} if posts == "fk" else set())
    return expected
