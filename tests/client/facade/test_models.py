"""SQLAlchemy-first setup: ClientConfig.from_models, SyncClient.create(models=...), and the
in-place schema upgrade that keeps dirty rows."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from oversync_sa.client import (
    ChangeKind,
    DestructiveSchemaChangeError,
    SyncClient,
    plan_schema_upgrade,
    upgrade_schema,
)
from oversync_sa.client.config import ClientConfig
from oversync_sa.errors import ConfigurationError
from oversync_sa.metadata import SyncedBase, SyncOptions
from tests.client.facade.server import BASE_URL, SyncServer


class V1(SyncedBase):
    pass


class UserV1(V1):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]


class CountryV1(V1):
    __tablename__ = "countries"
    __sync_options__ = SyncOptions(download_only=True)
    code: Mapped[str] = mapped_column(primary_key=True)


class V2(SyncedBase):
    pass


class UserV2(V2):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    nickname: Mapped[str | None] = mapped_column(index=True)
    score: Mapped[int] = mapped_column(server_default=sa.text("0"))
    team_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("teams.id"))


class CountryV2(V2):
    __tablename__ = "countries"
    __sync_options__ = SyncOptions(download_only=True)
    code: Mapped[str] = mapped_column(primary_key=True)


class TeamV2(V2):
    __tablename__ = "teams"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    label: Mapped[str]


async def create(path: Path, models: Any, server: SyncServer | None = None) -> SyncClient:
    return await SyncClient.create(
        path, BASE_URL, lambda: "t", models=models, schema="business",
        http_transport=(server or SyncServer()).transport,
    )


async def close(client: SyncClient) -> None:
    await client.close()
    await client.runtime.engine.dispose()


def sql(path: Path, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as raw:
        return [tuple(r) for r in raw.execute(statement, params)]


def test_config_from_models_honours_registry() -> None:
    cfg = ClientConfig.from_models(V2, schema="app", backoff_min=0.5)
    assert cfg.schema == "app"
    assert cfg.backoff_min == 0.5
    by_name = {t.name: t for t in cfg.tables}
    assert [t.name for t in cfg.tables].index("teams") < [t.name for t in cfg.tables].index(
        "users"
    )  # parents first
    assert by_name["countries"].download_only
    assert not by_name["users"].download_only
    assert by_name["users"].key_columns == ("id",)


def test_config_from_models_rejects_non_models() -> None:
    with pytest.raises(ConfigurationError, match="declarative base"):
        ClientConfig.from_models(object())


async def test_create_with_models_builds_the_mirror(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    client = await create(path, V1)
    try:
        report = client.schema_upgrade
        assert report is not None
        assert sorted(report.plan.create_tables) == ["countries", "users"]
        assert "trg_users_ai" in report.refreshed_triggers
        async with client.session() as session:
            session.add(UserV1(id="a", name="Ann"))
            await session.commit()
        assert sql(path, "SELECT table_name, key_json FROM _sync_dirty_rows") == [
            ("users", '{"id":"a"}')
        ]
        with pytest.raises(sqlite3.IntegrityError, match="download-only"):
            sql(path, "INSERT INTO countries (code) VALUES ('de')")
    finally:
        await close(client)
    again = await create(path, V1)  # unchanged models: nothing to do
    try:
        assert again.schema_upgrade is not None
        assert not again.schema_upgrade.changed
    finally:
        await close(again)


async def test_upgrade_keeps_dirty_rows_and_widens_their_payloads(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    client = await create(path, V1)
    await client.open()
    sql(path, "INSERT INTO users (id, name) VALUES ('a', 'Ann'), ('b', 'Bob')")
    sql(path, "DELETE FROM users WHERE id = 'b'")
    before = sql(path, "SELECT key_json, op, base_row_version, dirty_ordinal FROM _sync_dirty_rows"
                       " ORDER BY dirty_ordinal")
    await close(client)

    server = SyncServer()
    client = await create(path, V2, server)
    try:
        report = client.schema_upgrade
        assert report is not None
        assert report.plan.create_tables == ("teams",)
        assert sorted(report.plan.add_columns) == [
            ("users", "nickname"), ("users", "score"), ("users", "team_id"),
        ]
        assert report.plan.create_indexes == ("ix_users_nickname",)
        assert report.rewritten_dirty_rows == 1  # the delete has no payload
        after = sql(path, "SELECT key_json, op, base_row_version, dirty_ordinal"
                          " FROM _sync_dirty_rows ORDER BY dirty_ordinal")
        assert after == before  # same rows, pins untouched
        (payload,) = sql(path, "SELECT payload FROM _sync_dirty_rows WHERE payload IS NOT NULL")
        assert json.loads(payload[0]) == {
            "id": "a", "name": "Ann", "nickname": None, "score": 0, "team_id": None,
        }
        # The new FK column is a real FK, so it travels as a UUID (§3.6).
        assert ("teams", "team_id", "id") in sql(
            path, 'SELECT "table", "from", "to" FROM pragma_foreign_key_list(\'users\')'
        )
        # Triggers now capture the new columns.
        team = uuid.uuid4()
        sql(path, "INSERT INTO teams (id, label) VALUES (?, 'T')", (team.bytes,))
        sql(path, "UPDATE users SET nickname = 'annie', team_id = ? WHERE id = 'a'",
            (team.bytes,))
        (payload,) = sql(path, "SELECT payload FROM _sync_dirty_rows WHERE key_json = ?",
                         ('{"id":"a"}',))
        assert json.loads(payload[0])["nickname"] == "annie"

        await client.open()
        await client.attach("u1")
        await client.push_pending()
        pushed = {r["key"]["id"] if r["table"] == "users" else "team": r
                  for r in server.pushed_rows()}
        assert pushed["a"]["payload"]["team_id"] == str(team)
        assert pushed["a"]["payload"]["nickname"] == "annie"
        assert "b" not in pushed  # INSERT then DELETE of a never-synced key is a no-op
    finally:
        await close(client)


class Removed(SyncedBase):
    pass


class UserRemoved(Removed):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(primary_key=True)


class Retyped(SyncedBase):
    pass


class UserRetyped(Retyped):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[int]


class Required(SyncedBase):
    pass


class UserRequired(Required):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    email: Mapped[str]
    handle: Mapped[str | None] = mapped_column(unique=True)


class Rekeyed(SyncedBase):
    pass


class UserRekeyed(Rekeyed):
    __tablename__ = "users"
    name: Mapped[str] = mapped_column(primary_key=True)
    id: Mapped[str]


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        (Removed, [("users", "name", ChangeKind.COLUMN_REMOVED)]),
        (Retyped, [("users", "name", ChangeKind.TYPE_CHANGED)]),
        (Required, [
            ("users", "email", ChangeKind.NOT_NULL_WITHOUT_DEFAULT),
            ("users", "handle", ChangeKind.UNSUPPORTED_NEW_COLUMN),
        ]),
        (Rekeyed, [("users", "name", ChangeKind.KEY_CHANGED)]),
    ],
)
async def test_destructive_changes_are_refused_without_side_effects(
    tmp_path: Path, models: Any, expected: list[tuple[str, str, ChangeKind]]
) -> None:
    path = tmp_path / "m.db"
    client = await create(path, V1)
    sql(path, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    await close(client)
    schema_before = sql(path, "SELECT name, sql FROM sqlite_master ORDER BY name")
    dirty_before = sql(path, "SELECT * FROM _sync_dirty_rows")

    with pytest.raises(DestructiveSchemaChangeError) as caught:
        await create(path, models)
    refused = [(c.table, c.column, c.kind) for c in caught.value.changes]
    assert sorted(refused, key=str) == sorted(expected, key=str)
    assert (caught.value.table, caught.value.column) == refused[0][:2]
    assert f"{expected[0][0]}.{expected[0][1]}" in str(caught.value)
    assert sql(path, "SELECT name, sql FROM sqlite_master ORDER BY name") == schema_before
    assert sql(path, "SELECT * FROM _sync_dirty_rows") == dirty_before
    # The database is not left owned by the failed construction.
    client = await create(path, V1)
    await close(client)


class OnlyCountries(SyncedBase):
    pass


class CountryOnly(OnlyCountries):
    __tablename__ = "countries"
    __sync_options__ = SyncOptions(download_only=True)
    code: Mapped[str] = mapped_column(primary_key=True)


async def test_table_leaving_the_models(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    await close(await create(path, V1))
    sql(path, "INSERT INTO users (id, name) VALUES ('a', 'Ann')")
    with pytest.raises(DestructiveSchemaChangeError) as caught:
        await upgrade_schema(path, OnlyCountries)
    assert caught.value.changes[0].kind is ChangeKind.TABLE_REMOVED_WITH_PENDING_ROWS
    assert caught.value.table == "users"

    sql(path, "DELETE FROM _sync_dirty_rows")  # as if pushed
    report = await upgrade_schema(path, OnlyCountries)
    assert report.plan.retire_tables == ("users",)
    sql(path, "INSERT INTO users (id, name) VALUES ('b', 'Bob')")
    assert sql(path, "SELECT COUNT(*) FROM _sync_dirty_rows") == [(0,)]  # no capture any more
    assert sql(path, "SELECT COUNT(*) FROM users") == [(2,)]  # rows kept


async def test_plan_is_read_only(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    await close(await create(path, V1))
    engine = sa.ext.asyncio.create_async_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.connect() as conn:
            plan = await plan_schema_upgrade(conn, V2)
        assert plan.add_columns
        assert not plan.empty
        assert plan.refused == ()
        assert "nickname" not in {r[1] for r in sql(path, "PRAGMA table_info(users)")}
        report = await upgrade_schema(engine, V2)  # an engine passed in stays usable
        assert report.changed
        async with engine.connect() as conn:
            assert (await plan_schema_upgrade(conn, V2)).empty
    finally:
        await engine.dispose()
