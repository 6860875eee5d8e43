"""Plumbing shared by the read paths (committed rows, pull, snapshots).

* :class:`ActorLike` — the ``(user_id, source_id)`` pair a read runs for; any object with those
  two string attributes fits (the Litestar ``Actor``, a test double).
* :func:`read_transaction` — a REPEATABLE READ transaction (optionally READ ONLY, §7.7), so one
  response is built from one MVCC snapshot even while writers commit.
* :func:`locked_repeatable_read` — the same under the per-user advisory lock, for snapshot
  creation, which writes rows that reference the user's ``sync.user_state`` row.
* :func:`driver_connection` — the asyncpg connection under it, for page queries that return many
  rows: asyncpg records skip SQLAlchemy's result machinery, which is most of the per-row cost.
* :func:`key_text_sql` — the wire key text computed in SQL, so rows never need a Python-side
  ``uuid.UUID`` round trip; :func:`key_json_sql` the same as a JSON string for SQL-rendered
  responses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from msgspec import Raw
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from oversync_sa.errors import AuthenticationFailedError
from oversync_sa.server import fastsql
from oversync_sa.server.locks import user_lock
from oversync_sa.server.runtime_info import RuntimeTable
from oversync_sa.wire.keys import Op
from oversync_sa.wire.models import BundleRow

__all__ = [
    "ActorLike",
    "bundle_row",
    "driver_connection",
    "key_json_sql",
    "key_text_sql",
    "locked_repeatable_read",
    "read_transaction",
    "require_actor",
    "uuid_table_ids",
]


class ActorLike(Protocol):
    """The caller of a read: its scope (``user_id``) and device (``source_id``)."""

    @property
    def user_id(self) -> str: ...

    @property
    def source_id(self) -> str: ...


def require_actor(actor: ActorLike, *, need_source: bool) -> None:
    """Reject an actor without a user (and, where the operation needs one, a source)."""
    if not actor.user_id:
        raise AuthenticationFailedError("actor user_id is required")
    if need_source and not actor.source_id.strip():
        raise AuthenticationFailedError("actor source_id is required")


@asynccontextmanager
async def read_transaction(
    engine: AsyncEngine, *, read_only: bool
) -> AsyncIterator[AsyncConnection]:
    """One REPEATABLE READ transaction on a pooled connection; commits on normal exit.

    The isolation options are connection-level in SQLAlchemy and are reset when the connection
    returns to the pool, so they never leak into writers that expect READ COMMITTED.
    """
    async with engine.connect() as conn:
        options: dict[str, Any] = {"isolation_level": "REPEATABLE READ"}
        if read_only:
            options["postgresql_readonly"] = True
        await conn.execution_options(**options)
        async with conn.begin():
            yield conn


@asynccontextmanager
async def locked_repeatable_read(
    engine: AsyncEngine, user_id: str
) -> AsyncIterator[AsyncConnection]:
    """A REPEATABLE READ read-write transaction under the per-user advisory lock (§3.6).

    For reads that also write rows referencing ``sync.user_state`` (snapshot creation): the
    foreign-key check locks the user's ``user_state`` row, and under REPEATABLE READ that fails
    with a serialization error whenever a bundle commit bumped ``next_bundle_seq`` after the
    snapshot was taken. Every bundle writer holds this lock, so holding it too keeps the row
    stable for the whole transaction (and serialises source rotation with pushes).
    """
    async with user_lock(engine, user_id) as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn


async def driver_connection(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``, inside ``conn``'s open transaction.

    SQLAlchemy begins the asyncpg transaction lazily at its first statement; a raw query issued
    before that would run outside the REPEATABLE READ snapshot. Callers therefore run at least
    one statement through ``conn`` first, and this check makes a violation fail loudly.
    """
    raw = await fastsql.driver(conn)
    if raw is None or not raw.is_in_transaction():
        raise RuntimeError("driver_connection() needs a transaction already started on conn")
    return raw


def uuid_table_ids(tables: Iterable[RuntimeTable]) -> list[int]:
    """The ``table_id`` s whose sync key is a uuid (the rest are text keys)."""
    return [t.table_id for t in tables if t.key_type == "uuid"]


def key_text_sql(table_id: str, key_bytes: str, uuid_ids_param: str) -> str:
    """SQL expression turning stored ``key_bytes`` into the wire key text (§1.1).

    uuid keys: 16 bytes -> canonical lowercase dashed text (a wrong length fails the cast, an
    internal error as the contract requires); text keys: the UTF-8 string.
    ``uuid_ids_param`` is the placeholder of an ``int[]`` from :func:`uuid_table_ids`.
    """
    return (
        f"CASE WHEN {table_id} = ANY({uuid_ids_param}::int[]) "
        f"THEN CAST(encode({key_bytes}, 'hex') AS uuid)::text "
        f"ELSE convert_from({key_bytes}, 'UTF8') END"
    )


def key_json_sql(table_id: str, key_bytes: str, uuid_ids_param: str) -> str:
    """SQL expression of the wire key text as a JSON string literal, quotes included.

    The same text as :func:`key_text_sql`; PostgreSQL's ``to_json(text)`` escapes exactly as
    msgspec does (``"``, ``\\``, control characters; nothing else), and a uuid needs no
    escaping. Used by the read paths that render response JSON in SQL.
    """
    return (
        f"CASE WHEN {table_id} = ANY({uuid_ids_param}::int[]) "
        f"THEN '\"' || CAST(encode({key_bytes}, 'hex') AS uuid)::text || '\"' "
        f"ELSE to_json(convert_from({key_bytes}, 'UTF8'))::text END"
    )


_OPS = {op.code: op for op in Op}


def bundle_row(
    table: RuntimeTable, key: str, op_code: int, row_version: int, payload: str | None
) -> BundleRow:
    """A wire row from stored columns; the stored canonical payload text is sent as is.

    DELETE rows carry no payload member at all (§11.4): ``payload`` is ``None`` for them.
    """
    if payload is None:
        # Leave ``payload`` at the struct's own default: msgspec omits a member only when it
        # holds that very default object, and writes any other empty ``Raw`` as ``"payload":}``.
        return BundleRow(
            schema=table.schema,
            table=table.table,
            key={table.key_column: key},
            op=_OPS[op_code],
            row_version=row_version,
        )
    return BundleRow(
        schema=table.schema,
        table=table.table,
        key={table.key_column: key},
        op=_OPS[op_code],
        row_version=row_version,
        payload=Raw(payload),
    )
