"""A table the app rebuilt itself (SQLite's create-copy-drop-rename) keeps its rows and changes.

``schema_upgrade`` tells apps to rebuild a table themselves to tighten a constraint; the rebuild
drops the client's triggers with the old table. Such a table is still configured and never left
the managed set, so it must not be taken for a table re-entering the set (whose untrusted rows
are dropped and re-pulled): its pending edit must reach the server as an edit, not a delete.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import pytest

from oversync_sa.client.results import PushOutcome
from tests.e2e.client._support import Harness, new_id, new_user, server_ids

pytestmark = pytest.mark.postgres


def _rebuild_users_table(path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        (sql,) = db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'users'"
        ).fetchone()
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute("BEGIN")
        db.execute(sql.replace("CREATE TABLE users", "CREATE TABLE users_new", 1))
        db.execute("INSERT INTO users_new SELECT * FROM users")
        db.execute("DROP TABLE users")
        db.execute("ALTER TABLE users_new RENAME TO users")
        db.execute("COMMIT")
    finally:
        db.close()


async def test_app_rebuilt_table_keeps_rows_and_pending_edit(harness: Harness) -> None:
    user = new_user()
    device = await harness.device("device", user=user)
    await device.attach()
    edited, untouched = new_id(), new_id()
    for row, name in ((edited, "Before"), (untouched, "Other")):
        await device.execute(
            "INSERT INTO users (id, name, email) VALUES (?, ?, ?)",
            (row.bytes, name, f"{name.lower()}@example.com"),
        )
    await device.c.sync()
    await device.execute("UPDATE users SET name = 'After' WHERE id = ?", (edited.bytes,))

    await device.close()
    await asyncio.to_thread(_rebuild_users_table, device.path)
    await device.restart()
    await device.attach()
    for _ in range(3):
        report = await device.c.sync()
        if report.push_outcome is PushOutcome.NO_CHANGE and not await device.dirty_count():
            break

    assert await server_ids(harness, user, "users") == {edited, untouched}
    assert await device.ids("users") == {edited, untouched}
    local = await device.table("users", "name")
    assert local[edited] == ("After",)
    server = await harness.server_scalar(
        "SELECT name FROM business.users WHERE id = :id", id=uuid.UUID(str(edited))
    )
    assert server == "After"
