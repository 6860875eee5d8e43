"""A table that leaves the sync configuration and comes back is restored from the server.

While a table is not synced the device neither captures its writes nor applies its changes, so
its rows stop meaning anything about the server's. When it is synced again they are dropped and
the next pull restores them (``oversync_sa.client.table_set``); other pending changes are
pushed as usual.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from oversync_sa.client.client import SyncClient
from oversync_sa.client.config import ClientConfig, SyncTable
from oversync_sa.client.results import PushOutcome
from tests.e2e.client._support import (
    FAST_RETRY,
    INSERT_USER,
    SCHEMA,
    TABLES,
    Device,
    Harness,
    new_id,
    new_user,
    server_ids,
)

pytestmark = pytest.mark.postgres

INSERT_CATEGORY = "INSERT INTO categories (id, name) VALUES (?, ?)"


async def restart_with(device: Device, tables: tuple[str, ...]) -> None:
    """Restart ``device`` as an app version that syncs only ``tables``, then attach again."""
    await device.close()
    device.engine = create_async_engine(f"sqlite+aiosqlite:///{device.path}")
    harness, user = device.harness, device.user

    async def token() -> str:
        return await harness.token(user)

    config = ClientConfig(
        SCHEMA, tuple(SyncTable(t, "id") for t in tables), retry_policy=FAST_RETRY
    )
    device.client = await SyncClient.create(device.engine, harness.base_url, token, config)
    await device.c.open()
    await device.attach()


async def categories(device: Device) -> dict[uuid.UUID, str]:
    return {k: v[0] for k, v in (await device.table("categories", "name")).items()}


async def test_resynced_table_is_restored_from_the_server(harness: Harness) -> None:
    user = new_user()
    app, other = await harness.device("app", user=user), await harness.device("other", user=user)
    await app.attach()
    kept, changed, removed = new_id(), new_id(), new_id()
    await app.execute_many(
        (INSERT_CATEGORY, (c.bytes, name))
        for c, name in ((kept, "kept"), (changed, "changed"), (removed, "removed"))
    )
    await app.c.sync()
    await other.attach()

    # App version 2 stops syncing categories; the rows stay as local data.
    await restart_with(app, tuple(t for t in TABLES if t != "categories"))
    assert set(await categories(app)) == {kept, changed, removed}
    # Local-only writes while unsynced: never captured, never pushed.
    await app.execute("UPDATE categories SET name = 'local only' WHERE id = ?", (kept.bytes,))
    await app.execute("DELETE FROM categories WHERE id = ?", (removed.bytes,))
    person = new_id()
    await app.execute(INSERT_USER, (person.bytes, "Pat", "pat@example.com"))
    assert await app.dirty_count() == 1
    # Meanwhile the server moves on.
    await other.execute("UPDATE categories SET name = 'server' WHERE id = ?", (changed.bytes,))
    added = new_id()
    await other.execute(INSERT_CATEGORY, (added.bytes, "added"))
    await other.c.sync()

    # Version 3 syncs categories again: the device's copy is not trusted.
    await restart_with(app, TABLES)
    assert await categories(app) == {}
    assert await app.dirty_count() == 1  # the pending user insert survives

    report = await app.c.sync()

    assert report.push_outcome is PushOutcome.COMMITTED
    assert person in await server_ids(harness, user, "users")
    server = {r["id"]: r["name"] for r in await harness.server_rows(user, "categories", "id, name")}
    assert server == {kept: "kept", changed: "server", removed: "removed", added: "added"}
    assert await categories(app) == server
    assert await app.dirty_count() == 0
    # The restored rows are synced state again: a later edit is pushed like any other.
    await app.execute("UPDATE categories SET name = 'edited' WHERE id = ?", (kept.bytes,))
    assert (await app.c.sync()).push_outcome is PushOutcome.COMMITTED
    await other.c.sync()
    assert (await categories(other))[kept] == "edited"
