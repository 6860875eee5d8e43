"""Conflicts whose authoritative state breaks a local foreign key (CLIENT.md §6.3).

The server's row (or its deletion) can depend on rows a stale device has not pulled: the owner
deleted a user after unlinking its posts, or moved a category under a new one. Applying only
the conflicting row then fails SQLite's deferred FK check at COMMIT; Go keeps the outbox and
fails the same way on every push. Here server-wins drops the local change and lets the pull
deliver the row with its dependencies, a kept/merged payload is an invalid resolution, and
dirty children removed by a local cascade are not pushed under a deleted parent. When the
missing rows are ones the device itself deletes (it unlinked the row, then deleted its
parent), server-wins keeps the server's row with the local references and pushes it as an
update, so the deletion is not refused by the server's foreign key on every push.
"""

from __future__ import annotations

from typing import Any

import pytest

from oversync_sa.client.conflicts import ConflictContext, KeepMerged, MergeResult
from oversync_sa.client.errors import InvalidConflictResolutionError
from oversync_sa.client.results import PushOutcome
from tests.e2e.client._support import (
    INSERT_CATEGORY,
    INSERT_POST,
    INSERT_USER,
    Device,
    Harness,
    new_id,
    two_devices,
)

pytestmark = pytest.mark.postgres

class KeepServerRowWithLocalName:
    """Merges the server row (with its new parent) with the local name."""

    def resolve(self, context: ConflictContext) -> MergeResult:
        assert context.server_row is not None
        assert context.local_payload is not None
        return KeepMerged({**context.server_row, "name": context.local_payload["name"]})


async def row_version(device: Device, table: str, key: Any) -> int | None:
    return await device.scalar(
        "SELECT row_version FROM _sync_row_state WHERE table_name = ? AND key_json = ?",
        (table, f'{{"id":"{key.hex}"}}'),
    )


async def moved_category(harness: Harness, resolver: Any = None) -> tuple[Device, Device, Any, Any]:
    """A moves a synced category under a new parent B has not pulled; B renames it."""
    _user, a, b = await two_devices(harness, resolver)
    category = new_id()
    await a.execute(INSERT_CATEGORY, (category.bytes, "Child", None))
    await a.c.sync()
    await b.c.sync()
    parent = new_id()
    await a.execute_many([
        (INSERT_CATEGORY, (parent.bytes, "New parent", None)),
        ("UPDATE categories SET parent_id = ? WHERE id = ?", (parent.bytes, category.bytes)),
    ])
    await a.c.sync()
    await b.execute("UPDATE categories SET name = 'Renamed' WHERE id = ?", (category.bytes,))
    return a, b, category, parent


async def test_server_deleted_a_user_whose_posts_the_device_still_links(
    harness: Harness,
) -> None:
    user, a, b = await two_devices(harness)
    author, post, other = new_id(), new_id(), new_id()
    await a.execute(INSERT_USER, (author.bytes, "Author", "author@example.com"))
    await a.execute(INSERT_POST, (post.bytes, "Post", "body", author.bytes))
    await a.c.sync()
    await b.c.sync()
    # The owner unlinks the post (posts.author_id has no cascade) and deletes the author.
    await a.execute_many([
        ("UPDATE posts SET author_id = NULL WHERE id = ?", (post.bytes,)),
        ("DELETE FROM users WHERE id = ?", (author.bytes,)),
    ])
    await a.c.sync()
    # B, stale, renames the deleted author (a conflict the server wins with a deletion) and
    # adds an unrelated user in the same bundle, which must still reach the server.
    await b.execute("UPDATE users SET name = 'Renamed' WHERE id = ?", (author.bytes,))
    await b.execute(INSERT_USER, (other.bytes, "Other", "other@example.com"))

    await b.c.sync()

    assert await b.table("users", "name") == {other: ("Other",)}
    assert await b.table("posts", "title, author_id") == {post: ("Post", None)}
    assert await b.dirty_count() == 0
    assert await b.outbox_count() == 0
    assert [r["name"] for r in await harness.server_rows(user, "users", "name")] == ["Other"]
    await a.c.sync()
    assert await a.table("users", "name") == await b.table("users", "name")


async def test_server_wins_waits_for_the_pull_when_the_new_parent_is_missing(
    harness: Harness,
) -> None:
    a, b, category, parent = await moved_category(harness)
    version_before = await row_version(b, "categories", category)
    assert version_before is not None

    report = await b.c.push_pending()

    # The local change is dropped, but the row is left for the pull: its parent is not here.
    assert report.outcome is PushOutcome.NO_CHANGE
    assert await b.dirty_count() == 0
    assert await b.outbox_count() == 0
    assert await row_version(b, "categories", category) == version_before
    assert await b.table("categories", "name, parent_id") == {category: ("Renamed", None)}

    await b.c.pull_to_stable()

    expected = {category: ("Child", parent.bytes), parent: ("New parent", None)}
    assert await b.table("categories", "name, parent_id") == expected
    assert await a.table("categories", "name, parent_id") == expected
    assert (await row_version(b, "categories", category) or 0) > version_before
    assert await b.dirty_count() == 0


async def test_a_merge_referencing_a_missing_parent_is_an_invalid_resolution(
    harness: Harness,
) -> None:
    _a, b, category, parent = await moved_category(harness, KeepServerRowWithLocalName())

    with pytest.raises(InvalidConflictResolutionError) as caught:
        await b.c.push_pending()

    assert "categories" in caught.value.reason
    assert "foreign key" in caught.value.reason
    # Nothing applied, the intent is back in the dirty rows, the outbox is released.
    assert await b.table("categories", "name, parent_id") == {category: ("Renamed", None)}
    assert await b.dirty_count() == 1
    assert await b.outbox_count() == 0

    # Choosing again (server wins) settles it: the device is not stuck.
    b.c.resolver = None
    await b.c.sync()
    assert await b.table("categories", "name, parent_id") == {
        category: ("Child", parent.bytes), parent: ("New parent", None)
    }
    assert await b.dirty_count() == 0


async def test_server_deleted_a_category_the_device_added_a_child_to(harness: Harness) -> None:
    user, a, b = await two_devices(harness)
    category = new_id()
    await a.execute(INSERT_CATEGORY, (category.bytes, "Parent", None))
    await a.c.sync()
    await b.c.sync()
    await a.execute("DELETE FROM categories WHERE id = ?", (category.bytes,))
    await a.c.sync()
    # B, stale, renames the deleted category and files a new child under it.
    child = new_id()
    await b.execute_many([
        ("UPDATE categories SET name = 'Renamed' WHERE id = ?", (category.bytes,)),
        (INSERT_CATEGORY, (child.bytes, "Child", category.bytes)),
    ])

    await b.c.sync()

    # Server wins the deletion; the child goes with it by the schema's ON DELETE CASCADE.
    assert await b.ids("categories") == set()
    assert await b.dirty_count() == 0
    assert await b.outbox_count() == 0
    assert await harness.server_rows(user, "categories", "id") == []


async def test_server_wins_on_a_row_whose_parent_the_device_deletes_does_not_wedge(
    harness: Harness,
) -> None:
    """Found by the deep convergence profile: A (stale) unlinks a post and deletes its author;
    B has changed the post's title meanwhile, so A's unlink conflicts. Server-wins keeps B's
    title but A's unlink, so A's deletion of the author is not refused by the server's FK."""
    user, a, b = await two_devices(harness)
    author, post = new_id(), new_id()
    await a.execute(INSERT_USER, (author.bytes, "Author", "author@example.com"))
    await a.execute(INSERT_POST, (post.bytes, "Title", "Body", author.bytes))
    await a.c.sync()
    await b.c.sync()
    await b.execute("UPDATE posts SET title = 'Contested' WHERE id = ?", (post.bytes,))
    await b.c.sync()
    await a.execute("UPDATE posts SET author_id = NULL WHERE id = ?", (post.bytes,))
    await a.execute("DELETE FROM users WHERE id = ?", (author.bytes,))

    await a.c.sync()
    await a.c.sync()

    assert await a.dirty_count() == 0
    assert await a.outbox_count() == 0
    assert await a.ids("users") == set()
    assert await a.table("posts", "title, author_id") == {post: ("Contested", None)}
    assert await harness.server_rows(user, "users", "id") == []
    assert [(r["title"], r["author_id"]) for r in await harness.server_rows(
        user, "posts", "title, author_id"
    )] == [("Contested", None)]
    await b.c.sync()
    assert await b.ids("users") == set()
    assert await b.table("posts", "title, author_id") == await a.table(
        "posts", "title, author_id"
    )
    assert await b.dirty_count() == 0
