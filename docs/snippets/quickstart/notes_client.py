"""notes_client.py: a device with a local SQLite file that syncs with the server."""

import uuid
from typing import Any

from notes_models import Base, Note
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from oversync_sa.client import ClientConfig
from oversync_sa.client.client import SyncClient
from oversync_sa.metadata import client_projection


async def add_note_and_sync(
    sqlite_path: str, server_url: str, user_id: str, token: str, *, http_transport: Any = None
) -> list[str]:
    """Write a note offline, sync, and return every title this device now has."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{sqlite_path}")
    async with engine.begin() as conn:  # the local mirror of the server tables
        await conn.run_sync(client_projection(Base).create_all)
    await engine.dispose()  # the client opens the file with its own connection settings

    # --8<-- [start:client]
    config = ClientConfig.from_models(Base, schema="business")
    client = await SyncClient.create(
        sqlite_path, server_url, lambda: token, config, http_transport=http_transport
    )
    # --8<-- [end:client]
    try:
        await client.open()
        await client.attach(user_id)  # the user the token was issued for
        async with client.session() as session:
            session.add(Note(id=uuid.uuid4(), title=f"written on {sqlite_path}"))
            await session.sync()  # commit locally, push, then pull what others pushed
            titles = await session.scalars(select(Note.title).order_by(Note.title))
            return list(titles)
    finally:
        await client.close()
