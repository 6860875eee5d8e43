"""Tables leaving and re-entering the managed set (``oversync_sa.client.table_set``).

A retired table keeps its rows but loses its triggers and row state; when it comes back to an
attached database its rows are dropped and the checkpoint rewinds, so the next pull restores it
from the server instead of trusting what the device kept meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oversync_sa.client import ChangeKind, DestructiveSchemaChangeError, SyncClient, upgrade_schema
from oversync_sa.client.config import ClientConfig, SyncTable
from tests.client.facade.server import BASE_URL, DDL, SyncServer
from tests.client.facade.test_models import V1, OnlyCountries, close, create, sql

ROW_STATE = "SELECT table_name, key_json, row_version FROM _sync_row_state ORDER BY 1, 2"


def as_synced(path: Path, checkpoint: int) -> None:
    """Make the file look attached and hydrated: users 'a' and countries 'de' at version 3."""
    sql(path, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    sql(path, "DELETE FROM _sync_dirty_rows")
    sql(
        path,
        "UPDATE _sync_attachment_state SET binding_state = 'attached', attached_user_id = 'u1',"
        " last_bundle_seq_seen = ?",
        (checkpoint,),
    )
    sql(path, "INSERT INTO countries (code) VALUES ('de')")  # download-only: via the raw file
    for table, key in (("users", '{"id":"a"}'), ("countries", '{"code":"de"}')):
        sql(
            path,
            "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version,"
            " deleted) VALUES ('business', ?, ?, 3, 0)",
            (table, key),
        )


def triggers(path: Path, table: str) -> list[str]:
    return [
        r[0] for r in sql(
            path, "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?"
            " ORDER BY name", (table,),
        )
    ]


async def make_v1(path: Path) -> None:
    await close(await create(path, V1))
    # The download-only guard would reject the fixture row; the client itself is not running.
    sql(path, "DROP TRIGGER IF EXISTS trg_countries_bi_guard")


async def test_leaving_table_forgets_its_row_state_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    await make_v1(path)
    as_synced(path, checkpoint=5)

    report = await upgrade_schema(path, OnlyCountries)

    assert report.plan.retire_tables == ("users",)
    assert triggers(path, "users") == []
    assert sql(path, "SELECT id, name FROM users") == [("a", "Ann")]
    assert sql(path, ROW_STATE) == [("countries", '{"code":"de"}', 3)]
    # Still registered, so detach and uninstall keep reaching it (CLIENT.md §2.2).
    assert ("business", "users") in sql(path, "SELECT * FROM _sync_managed_tables")
    assert sql(path, "SELECT last_bundle_seq_seen FROM _sync_attachment_state") == [(5,)]


async def test_reentering_table_is_pulled_again_on_an_attached_database(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    await make_v1(path)
    as_synced(path, checkpoint=5)
    await upgrade_schema(path, OnlyCountries)
    # Written while the table was not synced: nothing captured it, nothing would push it.
    sql(path, "UPDATE users SET name = 'local only' WHERE id = 'a'")
    sql(path, "INSERT INTO users (id, name) VALUES ('b', 'Bob')")
    assert sql(path, "SELECT COUNT(*) FROM _sync_dirty_rows") == [(0,)]

    report = await upgrade_schema(path, V1)

    assert report.rehydrated_tables == ("users",)
    assert report.changed
    assert sql(path, "SELECT COUNT(*) FROM users") == [(0,)]
    assert sql(path, ROW_STATE) == [("countries", '{"code":"de"}', 3)]  # untouched
    assert sql(path, "SELECT code FROM countries") == [("de",)]
    assert sql(path, "SELECT last_bundle_seq_seen FROM _sync_attachment_state") == [(0,)]
    assert sql(path, "SELECT COUNT(*) FROM _sync_dirty_rows") == [(0,)]  # deletes not captured
    assert "trg_users_ai" in triggers(path, "users")
    # Captured again from now on.
    sql(path, "INSERT INTO users (id, name) VALUES ('c', 'Cy')")
    assert sql(path, "SELECT table_name, key_json FROM _sync_dirty_rows") == [
        ("users", '{"id":"c"}')
    ]
    # A second start-up with the same models changes nothing more.
    again = await upgrade_schema(path, V1)
    assert again.rehydrated_tables == ()
    assert sql(path, "SELECT id FROM users") == [("c",)]


async def test_reentering_table_on_an_anonymous_database_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    await make_v1(path)
    sql(path, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    sql(path, "DELETE FROM _sync_dirty_rows")
    await upgrade_schema(path, OnlyCountries)

    report = await upgrade_schema(path, V1)

    # Nothing to pull yet: the first attach seeds or replaces the whole database anyway.
    assert report.rehydrated_tables == ()
    assert sql(path, "SELECT id, name FROM users") == [("a", "Ann")]
    assert "trg_users_ai" in triggers(path, "users")


async def _config_client(path: Path, tables: tuple[str, ...]) -> SyncClient:
    config = ClientConfig("business", tuple(SyncTable(t, sync_key_column="id") for t in tables))
    return await SyncClient.create(
        path, BASE_URL, lambda: "t", config, http_transport=SyncServer().transport
    )


async def test_config_clients_retire_and_rehydrate_too(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    for statement in DDL:
        sql(path, statement)
    await close(await _config_client(path, ("users", "posts")))
    sql(path, "INSERT INTO users (id, name) VALUES ('u', 'Ann')")
    sql(path, "INSERT INTO posts (id, title, author_id) VALUES ('p', 'Hello', 'u')")

    # A table with unpushed rows cannot leave (Go keeps capturing it and wedges every push).
    with pytest.raises(DestructiveSchemaChangeError) as refused:
        await _config_client(path, ("users",))
    assert refused.value.table == "posts"
    assert refused.value.changes[0].kind is ChangeKind.TABLE_REMOVED_WITH_PENDING_ROWS
    assert triggers(path, "posts") != []

    sql(path, "DELETE FROM _sync_dirty_rows")  # as if pushed
    sql(path, "UPDATE _sync_attachment_state SET binding_state = 'attached',"
              " attached_user_id = 'u1', last_bundle_seq_seen = 4")
    sql(path, "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version,"
              " deleted) VALUES ('business', 'posts', '{\"id\":\"p\"}', 2, 0)")
    await close(await _config_client(path, ("users",)))
    assert triggers(path, "posts") == []
    assert sql(path, "SELECT COUNT(*) FROM _sync_row_state WHERE table_name = 'posts'") == [(0,)]
    assert sql(path, "SELECT id FROM posts") == [("p",)]

    await close(await _config_client(path, ("users", "posts")))
    assert sql(path, "SELECT COUNT(*) FROM posts") == [(0,)]
    assert sql(path, "SELECT id FROM users") == [("u",)]
    assert sql(path, "SELECT last_bundle_seq_seen FROM _sync_attachment_state") == [(0,)]
    assert triggers(path, "posts") != []
