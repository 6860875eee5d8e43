"""Owner guard and capture triggers (SERVER.md §3.1) plus the scope-filter extension."""

from __future__ import annotations

import re
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from oversync_sa.server import RegisteredTable, ServiceConfig, SyncService
from tests.server.bootstrap.conftest import run_ddl

DDL = (
    "CREATE SCHEMA business",
    """CREATE TABLE business.parents (
        _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT,
        PRIMARY KEY (_sync_scope_id, id))""",
    """CREATE TABLE business.children (
        _sync_scope_id TEXT NOT NULL, code TEXT NOT NULL, parent_id UUID NOT NULL,
        PRIMARY KEY (_sync_scope_id, code),
        FOREIGN KEY (_sync_scope_id, parent_id) REFERENCES business.parents (_sync_scope_id, id)
            ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED)""",
)
P1 = uuid.UUID("11111111-1111-1111-1111-111111111111")
P2 = uuid.UUID("22222222-2222-2222-2222-222222222222")


@pytest.fixture
async def engine(pg_engine: AsyncEngine) -> AsyncEngine:
    await run_ddl(pg_engine, DDL)
    config = ServiceConfig(
        registered_tables=(
            RegisteredTable("business", "parents", "id"),
            RegisteredTable("business", "children", "code"),
        )
    )
    await SyncService(pg_engine, config).bootstrap()
    async with pg_engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO sync.user_state (user_id) VALUES ('alice'), ('bob')")
        )
    return pg_engine


async def _context(conn: AsyncConnection, user: str, *, scope_filter: bool = False) -> None:
    user_pk = (
        await conn.execute(
            sa.text("SELECT user_pk FROM sync.user_state WHERE user_id = :u"), {"u": user}
        )
    ).scalar_one()
    await conn.execute(
        sa.text(
            "SELECT set_config('oversync.bundle_user_id', :u, true),"
            " set_config('oversync.bundle_user_pk', :pk, true),"
            " set_config('oversync.bundle_scope_filter', :f, true)"
        ),
        {"u": user, "pk": str(user_pk), "f": "on" if scope_filter else ""},
    )


async def _stage(conn: AsyncConnection) -> list[tuple[object, ...]]:
    rows = await conn.execute(
        sa.text(
            "SELECT table_id, op_code, key_bytes, payload_db FROM sync.bundle_capture_stage"
            " WHERE txid = txid_current() ORDER BY capture_ordinal"
        )
    )
    return [tuple(r) for r in rows]


async def _rejected_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        value = (
            await conn.execute(
                sa.text("SELECT last_value, is_called FROM sync.rejected_registered_write_seq")
            )
        ).one()
    return int(value[0]) if value[1] else 0


async def _run(
    engine: AsyncEngine, user: str | None, *statements: str, parent: uuid.UUID | None = None
) -> None:
    """One transaction: optional bundle context, optional parent insert, then ``statements``."""
    async with engine.begin() as conn:
        if user is not None:
            await _context(conn, user)
        if parent is not None:
            await _insert_parent(conn, parent)
        for statement in statements:
            await conn.execute(sa.text(statement))


async def _insert_parent(conn: AsyncConnection, pid: uuid.UUID, scope: str | None = None) -> None:
    await conn.execute(
        sa.text("INSERT INTO business.parents (_sync_scope_id, id, name) VALUES (:s, :id, 'n')"),
        {"s": scope, "id": pid},
    )


async def test_write_without_context_is_rejected_and_counted(engine: AsyncEngine) -> None:
    before = await _rejected_count(engine)
    with pytest.raises(DBAPIError) as info:
        async with engine.begin() as conn:
            await _insert_parent(conn, P1, "alice")
    assert (
        "write to registered table business.parents requires oversync sync bundle context"
        in str(info.value)
    )
    assert getattr(info.value.orig, "sqlstate", None) == "P0001"
    assert await _rejected_count(engine) == before + 1


async def test_insert_update_delete_are_staged_without_scope(engine: AsyncEngine) -> None:
    async with engine.connect() as conn, conn.begin():
        await _context(conn, "alice")
        await _insert_parent(conn, P1)  # NULL scope is filled from the context
        await conn.execute(
            sa.text("UPDATE business.parents SET name = 'm' WHERE id = :id"), {"id": P1}
        )
        await conn.execute(sa.text("DELETE FROM business.parents WHERE id = :id"), {"id": P1})
        stage = await _stage(conn)
    assert stage == [
        (2, 1, P1.bytes, {"id": str(P1), "name": "n"}),
        (2, 2, P1.bytes, {"id": str(P1), "name": "m"}),
        (2, 3, P1.bytes, None),
    ]


async def test_key_change_stages_delete_then_insert(engine: AsyncEngine) -> None:
    async with engine.connect() as conn, conn.begin():
        await _context(conn, "alice")
        await _insert_parent(conn, P1)
        await conn.execute(
            sa.text("INSERT INTO business.children (code, parent_id) VALUES ('a', :p)"), {"p": P1}
        )
        await conn.execute(sa.text("UPDATE business.children SET code = 'b' WHERE code = 'a'"))
        stage = await _stage(conn)
    assert stage[1:] == [
        (1, 1, b"a", {"code": "a", "parent_id": str(P1)}),
        (1, 3, b"a", None),
        (1, 1, b"b", {"code": "b", "parent_id": str(P1)}),
    ]


async def test_cascade_delete_is_captured(engine: AsyncEngine) -> None:
    async with engine.connect() as conn, conn.begin():
        await _context(conn, "alice")
        await _insert_parent(conn, P1)
        await conn.execute(
            sa.text("INSERT INTO business.children (code, parent_id) VALUES ('a', :p)"), {"p": P1}
        )
        await conn.execute(sa.text("DELETE FROM business.parents WHERE id = :id"), {"id": P1})
        stage = await _stage(conn)
    assert [(t, op, k) for t, op, k, _ in stage[2:]] == [(2, 3, P1.bytes), (1, 3, b"a")]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (
            "INSERT INTO business.parents (_sync_scope_id, id) VALUES ('bob', gen_random_uuid())",
            "scope mismatch on registered table business.parents: "
            "actor alice cannot write owner bob",
        ),
        (
            "UPDATE business.parents SET name = 'x'",
            "scope mismatch on registered table business.parents: "
            "actor alice cannot update owner bob",
        ),
        (
            "DELETE FROM business.parents",
            "scope mismatch on registered table business.parents: "
            "actor alice cannot delete owner bob",
        ),
    ],
)
async def test_scope_mismatch_raises(engine: AsyncEngine, statement: str, message: str) -> None:
    async with engine.begin() as conn:
        await _context(conn, "bob")
        await _insert_parent(conn, P2)
    with pytest.raises(DBAPIError, match=re.escape(message)):
        await _run(engine, "alice", statement)


async def test_scope_mutation_raises(engine: AsyncEngine) -> None:
    with pytest.raises(DBAPIError, match=r"scope mutation is not allowed on registered table"):
        await _run(engine, "alice", "UPDATE business.parents SET _sync_scope_id = 'bob'", parent=P1)


async def test_missing_user_pk_raises(engine: AsyncEngine) -> None:
    with pytest.raises(DBAPIError, match="bundle context is missing user_pk"):
        await _run(
            engine,
            None,
            "SELECT set_config('oversync.bundle_user_id', 'alice', true)",
            "INSERT INTO business.parents (id) VALUES (gen_random_uuid())",
        )


async def test_scope_filter_skips_other_scopes(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await _context(conn, "bob")
        await _insert_parent(conn, P2)
    async with engine.connect() as conn, conn.begin():
        await _context(conn, "alice", scope_filter=True)
        await _insert_parent(conn, P1)
        updated = await conn.execute(sa.text("UPDATE business.parents SET name = 'x'"))
        deleted = await conn.execute(sa.text("DELETE FROM business.parents"))
        stage = await _stage(conn)
    assert (updated.rowcount, deleted.rowcount) == (1, 1)
    assert [op for _, op, _, _ in stage] == [1, 2, 3]
    async with engine.connect() as conn:
        names = (
            await conn.execute(sa.text("SELECT _sync_scope_id, name FROM business.parents"))
        ).all()
    assert [tuple(r) for r in names] == [("bob", "n")]


async def test_filter_mode_still_rejects_missing_context(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await _context(conn, "bob")
        await _insert_parent(conn, P2)
    with pytest.raises(DBAPIError, match="requires oversync sync bundle context"):
        await _run(
            engine,
            None,
            "SELECT set_config('oversync.bundle_scope_filter', 'on', true)",
            "DELETE FROM business.parents",
        )
