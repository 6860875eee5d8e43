"""Helpers for testing applications built on oversync-sa (and for our own test suite)."""

from oversync_sa.testing.postgres import (
    ENV_DATABASE_URL,
    LocalCluster,
    PostgresNotFoundError,
    PostgresServer,
    asyncpg_dsn,
    find_bin_dir,
    find_postgres,
    sqlalchemy_url,
    temporary_database,
)

__all__ = [
    "ENV_DATABASE_URL",
    "LocalCluster",
    "PostgresNotFoundError",
    "PostgresServer",
    "asyncpg_dsn",
    "find_bin_dir",
    "find_postgres",
    "sqlalchemy_url",
    "temporary_database",
]
