"""Application writes made while a snapshot is downloading survive the swap (real server).

A keep-source rebuild (``rebuild()``, or a pull answered ``history_pruned``) requires an empty
dirty queue when it starts, but nothing stops the application from writing while the chunks
download: only ``remote_replace`` and source recovery guard the tables. The swap then clears
the managed tables; a write captured meanwhile must be re-applied over the snapshot and stay
queued, not vanish with the old rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from tests.e2e.client._support import (
    INSERT_USER,
    Device,
    Harness,
    new_id,
    server_ids,
    two_devices,
)

pytestmark = pytest.mark.postgres


def _writer(
    device: Device, key: uuid.UUID
) -> tuple[list[int], Callable[[int, int], Awaitable[None]]]:
    """A progress callback that writes one user row at its first call (during the download,
    before the swap), and the list that records that it ran."""
    wrote: list[int] = []

    async def write_while_downloading(done: int, total: int) -> None:
        if not wrote:
            wrote.append(done)
            await device.execute_many([(INSERT_USER, (key.bytes, "During", "d@example.com"))])

    return wrote, write_while_downloading


async def test_write_during_keep_source_rebuild_download_is_kept_and_pushed(
    harness: Harness,
) -> None:
    user, a, b = await two_devices(harness)
    existing = new_id()
    await a.execute_many([(INSERT_USER, (existing.bytes, "Existing", "e@example.com"))])
    await a.c.sync()
    await b.c.sync()
    written = new_id()
    wrote, write_while_downloading = _writer(b, written)

    await b.c.rebuild(progress=write_while_downloading)

    assert wrote, "the rebuild never reported progress"
    names = {row[0] for row in await b.rows("SELECT name FROM users")}
    assert names == {"Existing", "During"}
    assert await b.dirty_count() == 1
    await b.c.sync()
    assert await server_ids(harness, user, "users") == {existing, written}
    await a.c.sync()
    assert {row[0] for row in await a.rows("SELECT name FROM users")} == {"Existing", "During"}


async def test_write_during_history_pruned_snapshot_is_kept_and_pushed(
    harness: Harness,
) -> None:
    user, a, b = await two_devices(harness)
    first, second = new_id(), new_id()
    await a.execute_many([(INSERT_USER, (first.bytes, "First", "f@example.com"))])
    await a.c.sync()
    await a.execute_many([(INSERT_USER, (second.bytes, "Second", "s@example.com"))])
    await a.c.sync()
    await harness.set_retention_floor(user, 2)  # b (checkpoint 0) can only rebuild now
    written = new_id()
    wrote, write_while_downloading = _writer(b, written)

    report = await b.c.sync(snapshot_progress=write_while_downloading)

    assert wrote, "the pull never rebuilt from a snapshot"
    assert report.restore is not None
    names = {row[0] for row in await b.rows("SELECT name FROM users")}
    assert names == {"First", "Second", "During"}
    assert await b.dirty_count() == 1
    await b.c.sync()
    assert await server_ids(harness, user, "users") == {first, second, written}
