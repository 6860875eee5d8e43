"""The README's walk-through as one runnable program: models, server, two devices, sync.

    python -m examples.quickstart            # finds or starts a PostgreSQL by itself

It declares two synced models, serves them with Litestar on a free loopback port, and syncs a
note written on a "phone" to a "laptop" of the same user. The README quotes this file; a test
runs it, so the README's code cannot rot.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
import uvicorn
from litestar import Litestar
from sqlalchemy import ForeignKey, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Mapped, mapped_column

from oversync_sa.client import SyncClient
from oversync_sa.litestar import OversyncPlugin
from oversync_sa.litestar.jwt import JWTConfig, issue_token
from oversync_sa.metadata import SyncedBase, server_projection
from oversync_sa.server import ServiceConfig, SyncService
from oversync_sa.testing import find_postgres, sqlalchemy_url

SECRET = "quickstart-secret-change-me-32-bytes-or-more"


# --- 1. Declare synced models once -------------------------------------------------------------
class Base(SyncedBase):
    pass


class Notebook(Base):
    __tablename__ = "notebooks"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    title: Mapped[str]


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    notebook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notebooks.id", ondelete="CASCADE"))
    body: Mapped[str]
    updated_at: Mapped[datetime]


# --- 2. Serve them ------------------------------------------------------------------------------
async def create_server(database_url: str) -> Litestar:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS business"))
        await conn.run_sync(server_projection(Base, schema="business").create_all)
    service = SyncService(engine, ServiceConfig.from_models(Base, schema="business"))
    return Litestar(plugins=[OversyncPlugin(service, jwt=JWTConfig(key=SECRET))])


# --- 3. Sync from devices -----------------------------------------------------------------------
async def open_device(path: Path, base_url: str, user_id: str) -> SyncClient:
    client = await SyncClient.create(
        path, base_url, lambda: issue_token(user_id, SECRET), models=Base
    )
    await client.open()
    await client.attach(user_id)
    return client


async def write_and_sync(phone: SyncClient) -> uuid.UUID:
    note_id = uuid.uuid4()
    async with phone.session() as session:
        notebook = Notebook(id=uuid.uuid4(), title="Field trip")
        session.add(notebook)
        session.add(
            Note(id=note_id, notebook_id=notebook.id, body="Bring boots",
                 updated_at=datetime.now(UTC))
        )
        await session.sync()  # commit locally, push, pull
    return note_id


async def read_on(laptop: SyncClient, note_id: uuid.UUID) -> str:
    await laptop.sync()
    async with laptop.session() as session:
        note = (await session.execute(select(Note).where(Note.id == note_id))).scalar_one()
        return note.body


# --- Plumbing for running it as a script --------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(database_url: str, workdir: Path) -> str:
    """Serve, sync a note from one device to another, and return what the second one read."""
    app = await create_server(database_url)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.05)
    base_url = f"http://127.0.0.1:{port}"
    phone = await open_device(workdir / "phone.db", base_url, "alice")
    laptop = await open_device(workdir / "laptop.db", base_url, "alice")
    try:
        note_id = await write_and_sync(phone)
        return await read_on(laptop, note_id)
    finally:
        await phone.close()
        await laptop.close()
        server.should_exit = True
        await serving


def main() -> int:
    postgres = find_postgres()
    try:
        url = postgres.create_database()
        with tempfile.TemporaryDirectory() as workdir:
            body = asyncio.run(run(sqlalchemy_url(url), Path(workdir)))
        print(f"the laptop read the phone's note: {body!r}")
        return 0
    finally:
        postgres.stop()


if __name__ == "__main__":
    sys.exit(main())
