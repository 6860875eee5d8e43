"""The driver-thread half of a pulled bundle's transaction: FK deferral and the WAL safety level."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oversync_sa.client import bulk_apply


@pytest.fixture
def wal(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE parent (id TEXT PRIMARY KEY)")
    try:
        yield conn
    finally:
        conn.close()


def _deferred(conn: sqlite3.Connection, cache: dict[str, Any]) -> int:
    (version,) = conn.execute("PRAGMA schema_version").fetchone()
    conn.execute("BEGIN")
    try:
        bulk_apply._defer_foreign_keys(conn.cursor(), int(version), cache)
        return int(conn.execute("PRAGMA defer_foreign_keys").fetchone()[0])
    finally:
        conn.execute("ROLLBACK")


def test_foreign_keys_are_deferred_once_the_schema_has_one(wal: sqlite3.Connection) -> None:
    cache: dict[str, Any] = {}
    # No foreign key anywhere: the pragma (which expires every prepared statement) is skipped.
    assert _deferred(wal, cache) == 0
    wal.execute("CREATE TABLE child (id TEXT PRIMARY KEY, parent_id TEXT REFERENCES parent (id))")
    # The schema version moved, so the cached answer is not reused.
    assert _deferred(wal, cache) == 1
    assert _deferred(wal, cache) == 1


def test_commits_with_normal_sync_and_restores_it(
    wal: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    applied: list[bool] = []

    def fake_apply(cursor: Any, *_args: Any) -> int:
        cursor.execute("INSERT INTO parent (id) VALUES ('p')")
        seen.append(int(cursor.execute("PRAGMA synchronous").fetchone()[0]))
        return 1

    def before_commit() -> None:
        applied.append(wal.in_transaction)

    monkeypatch.setattr(bulk_apply, "_apply", fake_apply)
    written, error = bulk_apply._transaction(wal, "s", {}, 1, {}, before_commit)
    assert (written, error, seen, applied) == (1, None, [1], [True])
    assert wal.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert not wal.in_transaction
    assert wal.execute("SELECT id FROM parent").fetchall() == [("p",)]


def test_a_failing_write_rolls_back_and_restores_sync(
    wal: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_apply(cursor: Any, *_args: Any) -> int:
        cursor.execute("INSERT INTO parent (id) VALUES ('p')")
        cursor.execute("INSERT INTO parent (id) VALUES ('p')")
        return 2

    monkeypatch.setattr(bulk_apply, "_apply", failing_apply)
    with pytest.raises(sqlite3.IntegrityError):
        bulk_apply._transaction(wal, "s", {}, 1, {}, lambda: None)
    assert wal.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert not wal.in_transaction
    assert wal.execute("SELECT COUNT(*) FROM parent").fetchone()[0] == 0


def test_a_failing_commit_is_returned_not_raised(
    wal: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal.execute("CREATE TABLE child (id TEXT PRIMARY KEY, parent_id TEXT REFERENCES parent (id))")

    def orphan(cursor: Any, *_args: Any) -> int:
        cursor.execute("PRAGMA defer_foreign_keys = ON")
        cursor.execute("INSERT INTO child (id, parent_id) VALUES ('c', 'missing')")
        return 1

    monkeypatch.setattr(bulk_apply, "_apply", orphan)
    written, error = bulk_apply._transaction(wal, "s", {}, 1, {}, lambda: None)
    assert written == 1
    assert isinstance(error, sqlite3.IntegrityError)
    assert not wal.in_transaction
    assert wal.execute("SELECT COUNT(*) FROM child").fetchone()[0] == 0
    assert wal.execute("PRAGMA synchronous").fetchone()[0] == 2
