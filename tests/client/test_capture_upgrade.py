"""Capture trigger shape: databases with older triggers are upgraded, cheaper SQL, same rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from oversync_sa.client import ClientConfig, SyncClient, SyncTable
from oversync_sa.client.encoding import payload_json_sql, serialize_row, text_affinity
from oversync_sa.client.errors import ConfigFieldError
from oversync_sa.client.local_schema import DEFAULT_CACHE_KIB
from oversync_sa.client.triggers import build_triggers, trigger_names

from .conftest import SCHEMA

DOCS = "CREATE TABLE docs (id TEXT PRIMARY KEY NOT NULL, body TEXT, n INTEGER, r REAL)"

_KEY = "json_object('id', CASE WHEN typeof({r}.\"id\") = 'real' AND abs({r}.\"id\") < 1e309" \
    " THEN json(printf('%!.17g', {r}.\"id\")) ELSE {r}.\"id\" END)"
_VALUE = "CASE WHEN typeof(NEW.\"{c}\") = 'real' AND abs(NEW.\"{c}\") < 1e309" \
    " THEN json(printf('%!.17g', NEW.\"{c}\")) ELSE NEW.\"{c}\" END"
_PAYLOAD = (
    "json_object(" + ", ".join(f"'{c}', {_VALUE.format(c=c)}" for c in ("id", "body", "n", "r"))
    + ")"
)
_SAME = "r.schema_name = 'business' AND r.table_name = 'docs' AND r.key_json = k.key_json"
_COLUMNS = "INSERT INTO _sync_dirty_rows (schema_name, table_name, key_json, op," \
    " base_row_version, payload, dirty_ordinal, updated_at)"
_TAIL = ",\n    (SELECT COALESCE(MAX(dirty_ordinal), 0) + 1 FROM _sync_dirty_rows),\n" \
    "    strftime('%Y-%m-%dT%H:%M:%fZ','now')\n"


def _old_upsert(ref: str, payload: str | None, where: str = "1") -> str:
    op = (
        f"CASE WHEN EXISTS (SELECT 1 FROM _sync_row_state AS r WHERE {_SAME}"
        " AND r.deleted = 0) THEN 'UPDATE' ELSE 'INSERT' END" if payload else "'DELETE'"
    )
    conflict = (
        "op = excluded.op, payload = excluded.payload, updated_at = excluded.updated_at"
        if payload else "op = 'DELETE', payload = NULL, updated_at = excluded.updated_at"
    )
    return (
        f"{_COLUMNS}\n  SELECT 'business', 'docs', k.key_json, {op},\n"
        f"    COALESCE((SELECT r.row_version FROM _sync_row_state AS r WHERE {_SAME}), 0),\n"
        f"    {payload or 'NULL'}{_TAIL}"
        f"  FROM (SELECT {_KEY.format(r=ref)} AS key_json) AS k WHERE {where}\n"
        f"  ON CONFLICT (schema_name, table_name, key_json) DO UPDATE SET {conflict};"
    )


#: The capture triggers as the previous release generated them (INSERT ... SELECT over a
#: derived key table, REAL rendering on every column).
OLD_TRIGGERS = {
    "trg_docs_ai": "CREATE TRIGGER \"trg_docs_ai\" AFTER INSERT ON \"docs\"\n"
    "WHEN COALESCE((SELECT apply_mode FROM _sync_apply_state WHERE singleton_key = 1), 0) = 0\n"
    f"BEGIN\n{_old_upsert('NEW', _PAYLOAD)}\nEND",
    "trg_docs_au": "CREATE TRIGGER \"trg_docs_au\" AFTER UPDATE ON \"docs\"\n"
    "WHEN COALESCE((SELECT apply_mode FROM _sync_apply_state WHERE singleton_key = 1), 0) = 0\n"
    f"BEGIN\n{_old_upsert('OLD', None, 'k.key_json IS NOT ' + _KEY.format(r='NEW'))}\n"
    f"{_old_upsert('NEW', _PAYLOAD)}\nEND",
    "trg_docs_ad": "CREATE TRIGGER \"trg_docs_ad\" AFTER DELETE ON \"docs\"\n"
    "WHEN COALESCE((SELECT apply_mode FROM _sync_apply_state WHERE singleton_key = 1), 0) = 0\n"
    f"BEGIN\n{_old_upsert('OLD', None)}\nEND",
}


def _no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected request {request.method} {request.url}")


async def _open(path: Path) -> SyncClient:
    return await SyncClient.create(
        path, "http://sync.test/", lambda: "t", ClientConfig(SCHEMA, (SyncTable("docs", "id"),)),
        http_transport=httpx.MockTransport(_no_network),
    )


def _triggers(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return {
            str(n): str(s)
            for n, s in db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        }


def _write_and_read(path: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("INSERT INTO docs VALUES ('a', 'x', 1, 0.1), ('b', 'y', 2.5, 1e308)")
        db.execute("UPDATE docs SET body = 'z', r = 0.30000000000000004 WHERE id = 'a'")
        db.execute("UPDATE docs SET id = 'c' WHERE id = 'b'")
        db.execute("DELETE FROM docs WHERE id = 'a'")
        return [
            tuple(r) for r in db.execute(
                "SELECT key_json, op, payload, dirty_ordinal FROM _sync_dirty_rows"
                " ORDER BY dirty_ordinal"
            )
        ]
    finally:
        db.close()


async def test_open_replaces_triggers_of_an_older_version(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(DOCS)
    client = await _open(path)
    current = _triggers(path)
    await client.close()
    await client.runtime.engine.dispose()

    # Pretend an older release installed the capture triggers.
    with sqlite3.connect(path) as db:
        for name, sql in OLD_TRIGGERS.items():
            db.execute(f'DROP TRIGGER "{name}"')
            db.execute(sql)
    assert {n: s for n, s in _triggers(path).items() if n in OLD_TRIGGERS} == OLD_TRIGGERS
    old_rows = _write_and_read(path)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM docs")
        db.execute("DELETE FROM _sync_dirty_rows")

    client = await _open(path)
    try:
        upgraded = _triggers(path)
        managed = client.runtime.managed
    finally:
        await client.close()
        await client.runtime.engine.dispose()
    assert upgraded == current
    assert upgraded == build_triggers(SCHEMA, managed.table("docs"))
    assert set(upgraded) == set(trigger_names("docs"))
    assert not any(upgraded[name] == sql for name, sql in OLD_TRIGGERS.items())
    # The new SQL captures exactly what the old one did.
    new_rows = _write_and_read(path)
    assert new_rows == old_rows
    # Ordinals are pinned by the first capture of a key: 'a' keeps 1 through its update and
    # delete, the key change of 'b' deletes 'b' (ordinal 2) and inserts 'c' (ordinal 3).
    # REAL keeps 17 significant digits (CLIENT.md §12.38).
    assert new_rows == [
        ('{"id":"a"}', "DELETE", None, 1),
        ('{"id":"b"}', "DELETE", None, 2),
        ('{"id":"c"}', "INSERT", '{"id":"c","body":"y","n":2.5,"r":9.9999999999999996e+307}', 3),
    ]


@pytest.mark.parametrize(
    ("declared", "text"),
    [
        ("TEXT", True), ("varchar(20)", True), ("CLOB", True), ("NCHAR", True),
        ("CHARINT", False), ("INTEGER", False), ("REAL", False), ("", False),
        ("NUMERIC", False), ("BLOB", False), ("ANY", False), ("DATETIME", False),
    ],
)
def test_text_affinity_follows_sqlite_rules(declared: str, text: bool) -> None:
    assert text_affinity(declared) is text


async def test_text_columns_skip_the_real_rendering_without_changing_payloads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as db:
        db.execute(DOCS)
    client = await _open(path)
    try:
        info = client.runtime.managed.table("docs")
        rendered = payload_json_sql(info, "NEW")
        assert "typeof(NEW.\"body\")" not in rendered
        assert "typeof(NEW.\"id\")" not in rendered
        assert "typeof(NEW.\"n\")" in rendered
        assert "typeof(NEW.\"r\")" in rendered
        with sqlite3.connect(path) as db:
            # A double in a TEXT column is stored as text; an INTEGER column keeps a
            # fractional double and the REAL column every one of its 17 digits.
            db.execute("INSERT INTO docs VALUES (0.1, 0.30000000000000004, 0.5, 0.1)")
        async with client.runtime.engine.connect() as conn:
            live = await serialize_row(conn, info, "0.1")
        (captured,) = _sqlite_rows(path, "SELECT payload FROM _sync_dirty_rows")
    finally:
        await client.close()
        await client.runtime.engine.dispose()
    assert captured == (live,)
    assert live == '{"id":"0.1","body":"0.3","n":0.5,"r":0.10000000000000001}'


def _sqlite_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return [tuple(r) for r in db.execute(sql)]


async def test_database_default_cache_is_raised_for_application_connections(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as db:
        db.execute(DOCS)
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    client = await _open(path)
    await client.close()
    await client.runtime.engine.dispose()
    wanted = DEFAULT_CACHE_KIB * 1024 // page_size
    # A plain application connection that sets nothing gets the bigger cache.
    assert _sqlite_rows(path, "PRAGMA cache_size") == [(wanted,)]

    # A bigger default chosen by the application is never lowered.
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA default_cache_size = {wanted * 2}")
    client = await _open(path)
    await client.close()
    await client.runtime.engine.dispose()
    assert _sqlite_rows(path, "PRAGMA default_cache_size") == [(wanted * 2,)]


async def test_default_cache_zero_leaves_the_database_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "z.db"
    with sqlite3.connect(path) as db:
        db.execute(DOCS)
        before = _sqlite_rows(path, "PRAGMA default_cache_size")
    client = await SyncClient.create(
        path, "http://sync.test/", lambda: "t",
        ClientConfig(SCHEMA, (SyncTable("docs", "id"),), default_cache_kib=0),
        http_transport=httpx.MockTransport(_no_network),
    )
    await client.close()
    await client.runtime.engine.dispose()
    assert _sqlite_rows(path, "PRAGMA default_cache_size") == before


@pytest.mark.parametrize("bad", [-1, "64"])
def test_default_cache_must_be_a_non_negative_int(bad: object) -> None:
    with pytest.raises(ConfigFieldError, match="default_cache_kib"):
        ClientConfig(SCHEMA, (SyncTable("docs", "id"),), default_cache_kib=bad)  # type: ignore[arg-type]
