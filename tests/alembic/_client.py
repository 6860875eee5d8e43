"""A live sync server for a model version and a real client device that follows the models.

The server is the reference pattern of ``examples/quickstart.py``: Litestar with
``OversyncPlugin`` served by uvicorn on a free loopback port, in this process. A running service
caches catalog ids, so a migration that changes the synced tables is applied with the server
stopped and followed by a new server for the new models (``docs/alembic.md``: restart after
such a migration).

The device is a :class:`~oversync_sa.client.SyncClient` over one SQLite file whose mirror is
created or upgraded in place by ``SyncClient.create(models=...)``. When the in-place upgrade
refuses the change (a dropped or renamed column), the device does what an app update would have
to do: push what it has, drop its file and start over from the server (attach → snapshot).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.client import SyncClient
from oversync_sa.client.schema_upgrade import ChangeKind, DestructiveSchemaChangeError
from oversync_sa.litestar import OversyncPlugin
from oversync_sa.litestar.jwt import JWTConfig, issue_token
from oversync_sa.server import ServiceConfig, SyncService
from tests._live_server import free_port
from tests.alembic._models import SCHEMA, build, service_config
from tests.alembic._sync import SCOPE

SECRET = "alembic-matrix-secret-that-is-long-enough-for-hs256"


@dataclass(frozen=True, slots=True)
class LiveServer:
    service: SyncService
    base_url: str


@asynccontextmanager
async def live_server(
    engine: AsyncEngine, models: str | ServiceConfig
) -> AsyncIterator[LiveServer]:
    """Serve a model version (or a configuration) over HTTP until the block ends."""
    config = service_config(models) if isinstance(models, str) else models
    service = SyncService(engine, config)
    # Bootstrapped here rather than in the app's lifespan, where uvicorn would only log a
    # refusal (e.g. a non-deferrable FK); the plugin skips a bootstrapped service.
    await service.bootstrap()
    app = Litestar(plugins=[OversyncPlugin(service, jwt=JWTConfig(key=SECRET))])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers a flag, not an event
        if serving.done():  # a failed bootstrap ends serve() before it starts
            await serving
            raise RuntimeError("uvicorn stopped before serving")
        await asyncio.sleep(0.02)
    try:
        yield LiveServer(service, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await serving


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@dataclass
class Device:
    """One app install: a SQLite file, the model version it runs, and its open client."""

    path: Path
    version: str = ""
    client: SyncClient | None = None
    #: ``(from, to, kinds)`` of every in-place upgrade the helper refused.
    refused: list[tuple[str, str, set[ChangeKind]]] = field(default_factory=list)

    async def run(self, server: LiveServer, version: str) -> SyncClient:
        """Open the device on ``version``'s models, upgrading its mirror (or reinstalling)."""
        await self.close()
        try:
            client = await self._create(server, version)
        except DestructiveSchemaChangeError as exc:
            self.refused.append((self.version, version, {c.kind for c in exc.changes}))
            await self._reinstall(server)
            client = await self._create(server, version)
        self.client, self.version = client, version
        await client.open()
        await client.attach(SCOPE)
        return client

    async def _create(self, server: LiveServer, version: str) -> SyncClient:
        return await SyncClient.create(
            self.path, server.base_url, lambda: issue_token(SCOPE, SECRET),
            models=build(version), schema=SCHEMA,
        )

    async def _reinstall(self, server: LiveServer) -> None:
        """Start over from an empty file; only safe without unpushed local changes."""
        old = await self._create(server, self.version)
        try:
            pending = (await old.pending_sync_status()).pending_row_count
        finally:
            await old.close()
            await old.runtime.engine.dispose()
        # An app would push first (with its old models, before the server migrates); these
        # tests write on the server only, so nothing may be pending here.
        assert pending == 0, f"{pending} unpushed row(s) would be lost by the reinstall"
        await asyncio.to_thread(_remove_database, self.path)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            await self.client.runtime.engine.dispose()
            self.client = None

    async def rows(self, table: str) -> dict[str, dict[str, Any]]:
        """``id -> row`` of a table of the mirror, every column, UUID BLOBs as dashed text."""
        assert self.client is not None
        async with self.client.runtime.engine.connect() as conn:
            result = await conn.execute(sa.text(f"SELECT * FROM {table}"))
            rows = [{k: _text(v) for k, v in row.items()} for row in result.mappings()]
        return {row["id"]: row for row in rows}


def _text(value: Any) -> Any:
    # The mirror stores UUIDs (key and references) as 16-byte BLOBs; the server wrote text.
    return str(uuid.UUID(bytes=value)) if isinstance(value, bytes) and len(value) == 16 else value
