"""Several devices of one user converge on the whole example schema over real HTTP.

Covers the shapes that break naive sync: self-referencing cascades (categories), a cascade into
another table (file_reviews), the teams <-> team_members FK cycle written in one transaction, a
nullable FK, binary BLOB payloads, typed values, server-originated writes and ORM writes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from examples.business_models import Category, File, FileReview, Post, User
from oversync_sa.client.results import AttachOutcome, PushOutcome, RemoteSyncOutcome
from tests.e2e.client._support import (
    INSERT_POST,
    INSERT_USER,
    TABLES,
    Device,
    Harness,
    new_id,
    new_user,
    server_ids,
)

pytestmark = pytest.mark.postgres

INSERT_CATEGORY = "INSERT INTO categories (id, name, parent_id) VALUES (?, ?, ?)"
INSERT_TEAM = "INSERT INTO teams (id, name, captain_member_id) VALUES (?, ?, ?)"
INSERT_MEMBER = "INSERT INTO team_members (id, name, team_id) VALUES (?, ?, ?)"
INSERT_FILE = "INSERT INTO files (id, name, data) VALUES (?, ?, ?)"
INSERT_REVIEW = "INSERT INTO file_reviews (id, review, file_id) VALUES (?, ?, ?)"
INSERT_TYPED = (
    "INSERT INTO typed_rows (id, name, note, count_value, enabled_flag, rating, data, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Every byte value, so no encoding step can get away with treating BLOBs as text.
ALL_BYTES = bytes(range(256))


async def state(device: Device) -> dict[str, list[tuple[Any, ...]]]:
    """Every business row of a device, comparable across devices."""
    return {t: sorted(await device.rows(f"SELECT * FROM {t}")) for t in TABLES}


async def seed_everything(device: Device) -> dict[str, Any]:
    """One transaction touching every table; returns the ids written."""
    ids: dict[str, Any] = {
        "author": new_id(), "post": new_id(), "orphan_post": new_id(),
        "root": new_id(), "child": new_id(), "grandchild": new_id(), "other_root": new_id(),
        "team": new_id(), "captain": new_id(), "member": new_id(),
        "file": new_id(), "file2": new_id(), "reviews": [new_id() for _ in range(3)],
    }
    await device.execute_many([
        (INSERT_USER, (ids["author"].bytes, "Author", "author@example.com")),
        # The post references its author; the second post has no author (nullable FK).
        (INSERT_POST, (ids["post"].bytes, "With author", "x", ids["author"].bytes)),
        (INSERT_POST, (ids["orphan_post"].bytes, "No author", "y", None)),
        (INSERT_CATEGORY, (ids["grandchild"].bytes, "Grandchild", ids["child"].bytes)),
        (INSERT_CATEGORY, (ids["child"].bytes, "Child", ids["root"].bytes)),
        (INSERT_CATEGORY, (ids["root"].bytes, "Root", None)),
        (INSERT_CATEGORY, (ids["other_root"].bytes, "Other root", None)),
        # The cycle: the team names its captain before the member row exists.
        (INSERT_TEAM, (ids["team"].bytes, "Team", ids["captain"].bytes)),
        (INSERT_MEMBER, (ids["captain"].bytes, "Captain", ids["team"].bytes)),
        (INSERT_MEMBER, (ids["member"].bytes, "Member", ids["team"].bytes)),
        (INSERT_FILE, (ids["file"].bytes, "all-bytes.bin", ALL_BYTES)),
        (INSERT_FILE, (ids["file2"].bytes, "zeros.bin", b"\x00" * 64)),
        *[
            (INSERT_REVIEW, (review.bytes, f"review {i}", ids["file"].bytes))
            for i, review in enumerate(ids["reviews"])
        ],
        (INSERT_REVIEW, (new_id().bytes, "on file2", ids["file2"].bytes)),
    ])
    return ids


async def test_devices_converge_on_the_whole_schema_with_cascades(harness: Harness) -> None:
    user = new_user()
    a = await harness.device("a", user=user)
    b = await harness.device("b", user=user)
    c = await harness.device("c", user=user)
    for device in (a, b, c):
        await device.attach()

    ids = await seed_everything(a)
    assert (await a.c.sync()).push_outcome is PushOutcome.COMMITTED
    for device in (b, c):
        assert (await device.c.sync()).remote_outcome is RemoteSyncOutcome.APPLIED_INCREMENTAL
    assert await state(a) == await state(b) == await state(c)
    assert {r["data"] for r in await harness.server_rows(user, "files", "data")} == {
        ALL_BYTES, b"\x00" * 64
    }
    assert await b.table("posts", "author_id") == {
        ids["post"]: (ids["author"].bytes,), ids["orphan_post"]: (None,)
    }

    # B deletes the root category and a file: SQLite cascades locally and the triggers
    # capture the cascaded child deletes too.
    await b.execute("DELETE FROM categories WHERE id = ?", (ids["root"].bytes,))
    await b.execute("DELETE FROM files WHERE id = ?", (ids["file"].bytes,))
    assert await b.ids("categories") == {ids["other_root"]}
    # C breaks the cycle (captain -> NULL), then deletes the team: members cascade.
    await c.execute("UPDATE teams SET captain_member_id = NULL WHERE id = ?", (ids["team"].bytes,))
    await c.execute("DELETE FROM teams WHERE id = ?", (ids["team"].bytes,))
    assert await c.ids("team_members") == set()

    assert (await b.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert (await c.c.sync()).push_outcome is PushOutcome.COMMITTED
    for device in (a, b, c):
        await device.c.sync()

    assert await server_ids(harness, user, "categories") == {ids["other_root"]}
    assert await server_ids(harness, user, "teams") == set()
    assert await server_ids(harness, user, "team_members") == set()
    assert await server_ids(harness, user, "files") == {ids["file2"]}
    assert len(await harness.server_rows(user, "file_reviews", "id")) == 1
    final = await state(a)
    assert final == await state(b) == await state(c)
    assert len(final["file_reviews"]) == 1
    assert final["files"] == [(ids["file2"].bytes, "zeros.bin", b"\x00" * 64)]

    # A late device hydrates the same state from a snapshot.
    late = await harness.device("late", user=user)
    assert (await late.attach()).outcome is AttachOutcome.USED_REMOTE_STATE
    assert await state(late) == final


async def test_server_side_cascade_delete_reaches_clients(harness: Harness) -> None:
    user = new_user()
    device = await harness.device("a", user=user)
    await device.attach()
    root, child, grandchild = new_id(), new_id(), new_id()
    file_id, review = new_id(), new_id()
    await device.execute_many([
        (INSERT_CATEGORY, (root.bytes, "Root", None)),
        (INSERT_CATEGORY, (child.bytes, "Child", root.bytes)),
        (INSERT_CATEGORY, (grandchild.bytes, "Grandchild", child.bytes)),
        (INSERT_FILE, (file_id.bytes, "f", b"\x01\x02")),
        (INSERT_REVIEW, (review.bytes, "r", file_id.bytes)),
    ])
    await device.c.sync()

    # A server-originated bundle: PostgreSQL's own ON DELETE CASCADE removes the subtree and
    # the reviews; the capture triggers record every cascaded delete in the same bundle.
    result = await harness.server_write(user, [
        ("DELETE FROM business.categories WHERE _sync_scope_id = :scope AND id = :id",
         {"id": root}),
        ("DELETE FROM business.files WHERE _sync_scope_id = :scope AND id = :id",
         {"id": file_id}),
    ])
    assert result.bundle.row_count == 5

    report = await device.c.sync()

    assert report.remote_outcome is RemoteSyncOutcome.APPLIED_INCREMENTAL
    assert await device.ids("categories") == set()
    assert await device.ids("files") == set()
    assert await device.ids("file_reviews") == set()
    assert await device.dirty_count() == 0
    assert await device.c.last_bundle_seq_seen() == result.bundle.bundle_seq


async def test_typed_rows_survive_push_pull_and_hydrate(harness: Harness) -> None:
    user = new_user()
    writer = await harness.device("writer", user=user)
    follower = await harness.device("follower", user=user)
    await writer.attach()
    await follower.attach()
    full, sparse, server_row = new_id(), new_id(), new_id()
    await writer.execute_many([
        (INSERT_TYPED, (full.bytes, "Full", "note ✓", 2**53, 1, 6.57111473696007,
                        bytes.fromhex("00112233445566778899aabbccddeeff"),
                        "2026-03-24T18:42:11Z")),
        (INSERT_TYPED, (sparse.bytes, "Sparse", None, -42, 0, None, None, None)),
    ])
    await writer.c.sync()
    await harness.server_write(user, [(
        "INSERT INTO business.typed_rows (_sync_scope_id, id, name, note, count_value,"
        " enabled_flag, rating, data, created_at) VALUES (:scope, :id, 'Server', NULL, 7, 1,"
        " 2.5, NULL, '2026-03-24T10:42:11-08:00')",
        {"id": server_row},
    )])

    await writer.c.sync()
    await follower.c.sync()
    hydrated = await harness.device("hydrated", user=user)
    await hydrated.attach()

    for device in (writer, follower, hydrated):
        rows = await device.table(
            "typed_rows",
            "name, note, count_value, enabled_flag,"
            " CASE WHEN rating IS NULL THEN NULL ELSE quote(rating) END,"
            " CASE WHEN data IS NULL THEN NULL ELSE hex(data) END, created_at",
        )
        assert set(rows) == {full, sparse, server_row}
        assert rows[full][:6] == (
            "Full", "note ✓", 2**53, 1, "6.57111473696007", "00112233445566778899AABBCCDDEEFF"
        )
        assert rows[sparse] == ("Sparse", None, -42, 0, None, None, None)
        assert rows[server_row][:6] == ("Server", None, 7, 1, "2.5", None)
        assert _instant(rows[full][6]) == _instant("2026-03-24T18:42:11Z")
        assert _instant(rows[server_row][6]) == _instant("2026-03-24T18:42:11Z")
        assert await device.dirty_count() == 0


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_orm_session_writes_are_captured_and_synced(harness: Harness) -> None:
    user = new_user()
    device = await harness.device("orm", user=user)
    peer = await harness.device("peer", user=user)
    await device.attach()
    await peer.attach()
    author_id, post_id, root_id, child_id = new_id(), new_id(), new_id(), new_id()
    file_id, review_id = new_id(), new_id()

    async with device.c.session() as session:
        session.add(User(id=author_id, name="Ada", email="ada@example.com"))
        session.add(Post(id=post_id, title="ORM", content="hello", author_id=author_id))
        session.add(Category(id=root_id, name="root", parent_id=None))
        session.add(Category(id=child_id, name="child", parent_id=root_id))
        session.add(File(id=file_id, name="f.bin", data=ALL_BYTES))
        session.add(FileReview(id=review_id, review="ok", file_id=file_id))
        report = await session.sync()

    assert report.push_outcome is PushOutcome.COMMITTED
    assert await server_ids(harness, user, "users") == {author_id}
    assert await server_ids(harness, user, "categories") == {root_id, child_id}
    assert [r["data"] for r in await harness.server_rows(user, "files", "data")] == [ALL_BYTES]

    # An ORM update and delete on the peer flow back the same way.
    await peer.c.sync()
    async with peer.c.session() as session:
        author = (await session.execute(select(User).where(User.id == author_id))).scalar_one()
        author.name = "Ada Lovelace"
        post = await session.get(Post, post_id)
        assert post is not None
        await session.delete(post)
        await session.sync()

    await device.c.sync()
    async with device.c.session() as session:
        names = (await session.execute(select(User.name))).scalars().all()
        posts = (await session.execute(select(Post))).scalars().all()
        reviews = (await session.execute(select(FileReview.file_id))).scalars().all()
    assert names == ["Ada Lovelace"]
    assert posts == []
    assert reviews == [file_id]
    assert isinstance(reviews[0], uuid.UUID)
    server_users = await harness.server_rows(user, "users", "name")
    assert server_users == [{"name": "Ada Lovelace"}]
