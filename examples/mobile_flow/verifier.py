"""Server-side checks, straight in the server's PostgreSQL (never through the sync API).

Counts go through ``sync.row_state`` (the authority on what is live) or the business tables'
``_sync_scope_id``; each scenario uses its own user ids, so every query is per scope and the
checks hold on a server that other runs share.
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg

__all__ = ["Verifier"]

_LIVE_ROWS: Final = """
    SELECT COUNT(*) FROM sync.row_state rs
    JOIN sync.user_state us ON us.user_pk = rs.user_pk
    JOIN sync.table_catalog tc ON tc.table_id = rs.table_id
    WHERE us.user_id = $1 AND tc.schema_name = 'business' AND tc.table_name = $2
      AND rs.deleted = FALSE"""
_BUNDLES: Final = """
    SELECT COUNT(*) FROM sync.bundle_log bl JOIN sync.user_state us USING (user_pk)
    WHERE us.user_id = $1"""
_BUNDLES_AT_FLOOR: Final = """
    SELECT COUNT(*) FROM sync.bundle_log bl JOIN sync.user_state us USING (user_pk)
    WHERE us.user_id = $1 AND bl.bundle_seq <= us.retained_bundle_floor"""
_BUNDLE_ROWS_AT_FLOOR: Final = """
    SELECT COUNT(*) FROM sync.bundle_rows br JOIN sync.user_state us USING (user_pk)
    WHERE us.user_id = $1 AND br.bundle_seq <= us.retained_bundle_floor"""
_DELETE_HISTORY: Final = """
    DELETE FROM sync.bundle_log bl USING sync.user_state us
    WHERE us.user_id = $1 AND bl.user_pk = us.user_pk
      AND bl.bundle_seq <= us.retained_bundle_floor"""
#: What go-oversync's ``--cleanup`` empties; tables missing on this server are skipped.
CLEANUP_TABLES: Final = (
    "business.file_reviews",
    "business.files",
    "business.posts",
    "business.users",
    "business.typed_rows",
    "business.categories",
    "business.team_members",
    "business.teams",
    "sync.snapshot_session_rows",
    "sync.snapshot_sessions",
    "sync.push_session_rows",
    "sync.push_sessions",
    "sync.bundle_capture_stage",
    "sync.bundle_rows",
    "sync.bundle_log",
    "sync.source_state",
    "sync.scope_state",
    "sync.row_state",
    "sync.user_state",
)


class Verifier:
    """A small asyncpg pool on the server's database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, url: str) -> Verifier:
        # SQLAlchemy-style URLs are accepted too (``postgresql+asyncpg://``).
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        return cls(await asyncpg.create_pool(dsn, min_size=1, max_size=4))

    async def close(self) -> None:
        await self.pool.close()

    async def _val(self, sql: str, *args: Any) -> Any:
        return await self.pool.fetchval(sql, *args)

    async def live_rows(self, user_id: str, table: str) -> int:
        """Live (not deleted) rows of ``business.<table>`` in the scope, per ``row_state``."""
        return int(await self._val(_LIVE_ROWS, user_id, table))

    async def business_rows(self, user_id: str, table: str) -> int:
        """Rows physically present in ``business.<table>`` for the scope."""
        return int(
            await self._val(
                f"SELECT COUNT(*) FROM business.{table} WHERE _sync_scope_id = $1", user_id
            )
        )

    async def business_ids(self, user_id: str, table: str) -> set[str]:
        rows = await self.pool.fetch(
            f"SELECT id::text FROM business.{table} WHERE _sync_scope_id = $1", user_id
        )
        return {str(r[0]) for r in rows}

    async def row_exists(self, user_id: str, table: str, row_id: str) -> bool:
        return bool(
            await self._val(
                f"SELECT COUNT(*) FROM business.{table} "
                "WHERE _sync_scope_id = $1 AND id = $2::uuid",
                user_id,
                row_id,
            )
        )

    async def bundles(self, user_id: str) -> int:
        return int(await self._val(_BUNDLES, user_id))

    async def orphaned_reviews(self, user_id: str) -> int:
        return int(
            await self._val(
                """SELECT COUNT(*) FROM business.file_reviews r
               LEFT JOIN business.files f
                 ON f._sync_scope_id = r._sync_scope_id AND f.id = r.file_id
               WHERE r._sync_scope_id = $1 AND f.id IS NULL""",
                user_id,
            )
        )

    async def typed_row(self, user_id: str, row_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            """SELECT name, note, count_value, enabled_flag, rating,
                      encode(data, 'hex') AS data_hex, created_at
               FROM business.typed_rows WHERE _sync_scope_id = $1 AND id = $2::uuid""",
            user_id,
            row_id,
        )
        return dict(row) if row is not None else None

    # -- retention (complex-multi-batch forces a pruned history) --------------------------

    async def set_retained_floor(self, user_id: str, floor: int) -> None:
        await self.pool.execute(
            "UPDATE sync.user_state SET retained_bundle_floor = $2 WHERE user_id = $1",
            user_id,
            floor,
        )

    async def retained_floor(self, user_id: str) -> int:
        return int(
            await self._val(
                "SELECT retained_bundle_floor FROM sync.user_state WHERE user_id = $1", user_id
            )
        )

    async def history_at_or_below_floor(self, user_id: str) -> tuple[int, int]:
        """``(bundles, bundle rows)`` at or below the retained floor."""
        return (
            int(await self._val(_BUNDLES_AT_FLOOR, user_id)),
            int(await self._val(_BUNDLE_ROWS_AT_FLOOR, user_id)),
        )

    async def delete_history_at_or_below_floor(self, user_id: str) -> None:
        await self.pool.execute(_DELETE_HISTORY, user_id)

    async def source_states(self, user_id: str) -> int:
        return int(
            await self._val(
                """SELECT COUNT(*) FROM sync.source_state ss JOIN sync.user_state us USING (user_pk)
               WHERE us.user_id = $1""",
                user_id,
            )
        )

    # -- --cleanup ------------------------------------------------------------------------

    async def truncate_all(self) -> list[str]:
        """Empty the business and sync state tables (not the catalog); returns their names."""
        existing = {
            f"{r[0]}.{r[1]}"
            for r in await self.pool.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema IN ('business', 'sync')"
            )
        }
        tables: list[str] = [t for t in CLEANUP_TABLES if t in existing]
        if tables:
            await self.pool.execute(f"TRUNCATE TABLE {', '.join(tables)} RESTART IDENTITY CASCADE")
        return tables
