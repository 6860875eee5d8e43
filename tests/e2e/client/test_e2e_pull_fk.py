"""A pull after server-wins on a deleted row must not wedge on a foreign key (CLIENT.md §6.3, §7.3).

Found by the deep convergence profile: a stale device renames a category whose owner, in
bundles it has not pulled yet, first filed a child under it and then deleted it (the child goes
with it by ``ON DELETE CASCADE``, captured in the deleting bundle). The push conflicts and the
server wins with a deletion. Recording that deletion's row version for the parent while the
checkpoint is still behind made the pull skip the parent's history but apply the bundle that
inserts the child: SQLite's deferred FK check failed at COMMIT, the bundle rolled back, and
every later pull failed the same way.
"""

from __future__ import annotations

import pytest

from tests.e2e.client._support import INSERT_CATEGORY, Harness, new_id, two_devices

pytestmark = pytest.mark.postgres

async def test_pull_after_server_wins_a_deletion_applies_the_children_bundle(
    harness: Harness,
) -> None:
    user, a, b = await two_devices(harness)
    parent, child, grandchild = new_id(), new_id(), new_id()
    await a.execute(INSERT_CATEGORY, (parent.bytes, "Parent", None))
    await a.c.sync()
    await b.c.sync()
    stale = await b.c.last_bundle_seq_seen()
    # The owner files a child (and a grandchild) under the parent, then deletes the parent: two
    # bundles B has not pulled; the second one also carries the cascaded deletes.
    await a.execute_many([
        (INSERT_CATEGORY, (child.bytes, "Child", parent.bytes)),
        (INSERT_CATEGORY, (grandchild.bytes, "Grandchild", child.bytes)),
    ])
    await a.c.sync()
    await a.execute("DELETE FROM categories WHERE id = ?", (parent.bytes,))
    await a.c.sync()
    # B, stale, renames the parent: the push conflicts and the server wins with a deletion.
    await b.execute("UPDATE categories SET name = 'Renamed' WHERE id = ?", (parent.bytes,))
    assert await b.c.last_bundle_seq_seen() == stale

    await b.c.sync()

    assert await b.ids("categories") == set()
    assert await b.dirty_count() == 0
    assert await b.outbox_count() == 0
    assert await harness.server_rows(user, "categories", "id") == []
    assert await b.c.last_bundle_seq_seen() == await a.c.last_bundle_seq_seen()
    # And the device keeps syncing.
    other = new_id()
    await a.execute(INSERT_CATEGORY, (other.bytes, "Other", None))
    await a.c.sync()
    await b.c.sync()
    assert await b.ids("categories") == {other}


async def test_pull_after_both_sides_deleted_the_parent_applies_the_children_bundle(
    harness: Harness,
) -> None:
    # The same with a local DELETE: the row is already gone here, so no conflict plan could
    # keep it for the pull; the bundle that files a child under it still has to be applied.
    user, a, b = await two_devices(harness)
    parent, child = new_id(), new_id()
    await a.execute(INSERT_CATEGORY, (parent.bytes, "Parent", None))
    await a.c.sync()
    await b.c.sync()
    await a.execute(INSERT_CATEGORY, (child.bytes, "Child", parent.bytes))
    await a.c.sync()
    await a.execute("UPDATE categories SET name = 'Renamed' WHERE id = ?", (parent.bytes,))
    await a.execute("DELETE FROM categories WHERE id = ?", (parent.bytes,))
    await a.c.sync()
    await b.execute("DELETE FROM categories WHERE id = ?", (parent.bytes,))

    await b.c.sync()

    assert await b.ids("categories") == set()
    assert await b.dirty_count() == 0
    assert await b.outbox_count() == 0
    assert await harness.server_rows(user, "categories", "id") == []
    assert await b.c.last_bundle_seq_seen() == await a.c.last_bundle_seq_seen()
