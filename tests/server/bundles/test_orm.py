"""ORM writes with the declared SyncedBase models, two scopes holding the same keys."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from examples.business_models import BusinessBase, Post, User
from oversync_sa.metadata import server_projection
from oversync_sa.server import (
    RegisteredTable,
    ServiceConfig,
    SyncService,
    TransactionControlError,
)
from oversync_sa.server.writes import BundleWriter, ScopeManager
from tests.server.bundles._support import fetch

USER = uuid.UUID("00000000-0000-4000-8000-000000000001")
POST = uuid.UUID("00000000-0000-4000-8000-0000000000a1")


@pytest.fixture
async def orm_service(pg_engine: AsyncEngine) -> SyncService:
    async with pg_engine.begin() as conn:
        await conn.execute(sa.text("CREATE SCHEMA business"))
        await conn.run_sync(server_projection(BusinessBase).create_all)
    tables = tuple(
        RegisteredTable("business", t.name, "id") for t in BusinessBase.metadata.sorted_tables
    )
    service = SyncService(pg_engine, ServiceConfig(registered_tables=tables))
    await service.bootstrap()
    return service


async def _write(service: SyncService, scope: str, step: object) -> tuple[str, ...]:
    async def run(writer: BundleWriter) -> None:
        session = await writer.orm_session()
        await step(session)  # type: ignore[operator]

    result = await ScopeManager(service).exec_write(scope, run, writer_id="orm")
    return tuple(f"{r.table}:{r.op.value}" for r in result.bundle.rows)


async def test_orm_insert_select_update_delete_stay_in_their_scope(
    orm_service: SyncService,
) -> None:
    for scope in ("alice", "bob"):

        async def insert(session, scope: str = scope):  # type: ignore[no-untyped-def]
            session.add(User(id=USER, name=scope, email=f"{scope}@x"))
            await session.flush()
            session.add(Post(id=POST, title=f"{scope} post", content="c", author_id=USER))

        assert await _write(orm_service, scope, insert) == ("users:INSERT", "posts:INSERT")

    seen: list[object] = []

    async def update(session):  # type: ignore[no-untyped-def]
        users = (await session.scalars(sa.select(User))).all()
        seen.extend(u.name for u in users)
        user = await session.get(User, USER)
        seen.append(user.name)
        user.name = "alice renamed"
        titles = (await session.scalars(sa.select(Post.title).join(User))).all()
        seen.extend(titles)
        other = aliased(User)
        pairs = (
            await session.execute(sa.select(User.name, other.name).join(other, other.id == User.id))
        ).all()
        seen.extend(tuple(p) for p in pairs)

    assert await _write(orm_service, "alice", update) == ("users:UPDATE",)
    assert seen == ["alice", "alice", "alice post", ("alice renamed", "alice renamed")]

    async def bulk(session):  # type: ignore[no-untyped-def]
        await session.execute(sa.update(Post).where(Post.id == POST).values(title="bulk"))

    assert await _write(orm_service, "alice", bulk) == ("posts:UPDATE",)

    async def delete(session):  # type: ignore[no-untyped-def]
        post = await session.get(Post, POST)
        await session.delete(post)

    assert await _write(orm_service, "alice", delete) == ("posts:DELETE",)

    users = await fetch(
        orm_service.engine, "SELECT _sync_scope_id, name FROM business.users ORDER BY 1"
    )
    assert [tuple(r) for r in users] == [("alice", "alice renamed"), ("bob", "bob")]
    posts = await fetch(
        orm_service.engine, "SELECT _sync_scope_id, title FROM business.posts ORDER BY 1"
    )
    assert [tuple(r) for r in posts] == [("bob", "bob post")]


async def test_orm_unit_of_work_cannot_touch_another_scopes_row(
    orm_service: SyncService,
) -> None:
    async def insert(session):  # type: ignore[no-untyped-def]
        session.add(User(id=USER, name="bob", email="b@x"))

    await _write(orm_service, "bob", insert)

    async def sneaky_merge(session):  # type: ignore[no-untyped-def]
        # merge() finds nothing in alice's scope and INSERTs alice's own row instead.
        await session.merge(User(id=USER, name="alice", email="a@x"))

    assert await _write(orm_service, "alice", sneaky_merge) == ("users:INSERT",)
    users = await fetch(
        orm_service.engine, "SELECT _sync_scope_id, name FROM business.users ORDER BY 1"
    )
    assert [tuple(r) for r in users] == [("alice", "alice"), ("bob", "bob")]


async def test_session_rollback_in_a_callback_rolls_back_and_raises(
    orm_service: SyncService,
) -> None:
    async def undo(session):  # type: ignore[no-untyped-def]
        session.add(User(id=USER, name="alice", email="alice@x"))
        await session.flush()
        await session.rollback()  # meant to drop the insert; the bundle is ours to end

    with pytest.raises(TransactionControlError, match=r"rollback\(\) called"):
        await _write(orm_service, "alice", undo)
    assert await fetch(orm_service.engine, "SELECT id FROM business.users") == []
    assert await fetch(orm_service.engine, "SELECT bundle_seq FROM sync.bundle_log") == []


async def test_session_commit_in_a_callback_only_flushes(orm_service: SyncService) -> None:
    # The session joins in "rollback_only" mode: its commit() flushes and never reaches the
    # connection, so it is not transaction control.
    async def save(session):  # type: ignore[no-untyped-def]
        session.add(User(id=USER, name="alice", email="alice@x"))
        await session.commit()

    assert await _write(orm_service, "alice", save) == ("users:INSERT",)
