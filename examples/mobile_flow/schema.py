"""The devices' SQLite schema: the mobile_flow tables of CLIENT.md §11.2.

Deliberately *not* ``client_projection(BusinessBase)``: a real app that predates oversync has
hand-written tables, and these are the shapes go-oversync's simulator uses - text UUID keys for
the scalar tables, 16-byte UUID BLOB keys for ``files``/``file_reviews`` - so both local key
encodings are exercised against the server's ``UUID`` columns.
"""

from __future__ import annotations

from typing import Final

from oversync_sa.client import BundleChangeWatchMode, ClientConfig, SyncTable

__all__ = ["DDL", "MANAGED_TABLES", "client_config"]

#: Configuration order of the managed tables (parents before children, like Go's simulator).
MANAGED_TABLES: Final = (
    "users",
    "posts",
    "categories",
    "teams",
    "team_members",
    "files",
    "file_reviews",
    "typed_rows",
)

DDL: Final = (
    """CREATE TABLE IF NOT EXISTS users (
        id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS posts (
        id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL, content TEXT NOT NULL,
        author_id TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        FOREIGN KEY (author_id) REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED)""",
    """CREATE TABLE IF NOT EXISTS categories (
        id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, parent_id TEXT,
        FOREIGN KEY (parent_id) REFERENCES categories(id)
            ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED)""",
    """CREATE TABLE IF NOT EXISTS teams (
        id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, captain_member_id TEXT,
        FOREIGN KEY (captain_member_id) REFERENCES team_members(id)
            DEFERRABLE INITIALLY DEFERRED)""",
    """CREATE TABLE IF NOT EXISTS team_members (
        id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, team_id TEXT NOT NULL,
        FOREIGN KEY (team_id) REFERENCES teams(id)
            ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED)""",
    """CREATE TABLE IF NOT EXISTS files (
        id BLOB PRIMARY KEY NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS file_reviews (
        id BLOB PRIMARY KEY NOT NULL, review TEXT NOT NULL, file_id BLOB NOT NULL,
        FOREIGN KEY (file_id) REFERENCES files(id)
            ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED)""",
    """CREATE TABLE IF NOT EXISTS typed_rows (
        id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, note TEXT NULL,
        count_value INTEGER NULL, enabled_flag INTEGER NOT NULL, rating REAL NULL,
        data BLOB NULL, created_at TEXT NULL)""",
)


def client_config(
    *,
    upload_limit: int = 100,
    download_limit: int = 100,
    snapshot_chunk_rows: int = 0,
    backoff_min: float = 0.0,
    backoff_max: float = 0.0,
    watch: bool = False,
    watch_fallback_interval: float = 0.0,
) -> ClientConfig:
    """A client configuration over the eight tables; zero/unset values take the defaults."""
    return ClientConfig(
        schema="business",
        tables=tuple(SyncTable(name, sync_key_column="id") for name in MANAGED_TABLES),
        upload_limit=upload_limit,
        download_limit=download_limit,
        snapshot_chunk_rows=snapshot_chunk_rows,
        backoff_min=backoff_min,
        backoff_max=backoff_max,
        bundle_change_watch_mode=(
            BundleChangeWatchMode.AUTO if watch else BundleChangeWatchMode.OFF
        ),
        watch_fallback_interval=watch_fallback_interval,
    )
