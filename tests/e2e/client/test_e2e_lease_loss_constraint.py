"""A lost seed whose rows no longer fit next to the server's rows must not wedge the device.

The ``remote_authoritative`` attach after a lost initialization lease re-applies the unsent
rows over the server snapshot (``lease`` module). When one of them breaks a local constraint
next to a server row (here a UNIQUE email: both devices created the same address), the swap
cannot commit. Retrying it can never succeed, and the pending ``remote_replace`` operation makes
the capture guards refuse every application write - so the user could not even fix the row.
The attach must fail with an explanation, leave the rows pending and the database writable.
"""

from __future__ import annotations

import pytest

from oversync_sa.client.errors import AttachLocalStateConflictError
from oversync_sa.client.results import AttachOutcome, PushOutcome
from tests.e2e.client._support import INSERT_USER, Harness, new_id, new_user, server_ids
from tests.e2e.client.test_e2e_lease_loss import seed_then_lose_to_other_device

pytestmark = pytest.mark.postgres


async def test_lost_seed_conflicting_with_a_server_row_leaves_the_device_usable(
    harness: Harness,
) -> None:
    user = new_user()
    late, _winner, seeded, attached_edit, theirs = await seed_then_lose_to_other_device(
        harness, user
    )
    await late.execute("CREATE UNIQUE INDEX users_email_uq ON users (email)")
    # The winner's row has this address too.
    await late.execute("UPDATE users SET email = 'w@example.com' WHERE id = ?", (seeded.bytes,))

    with pytest.raises(AttachLocalStateConflictError, match="users"):
        await late.attach()

    # Nothing was lost, and the app can write again (to fix the row, say).
    assert await late.dirty_count() == 2
    assert await late.ids("users") == {seeded, attached_edit}
    await late.execute("UPDATE users SET email = 'l1@example.com' WHERE id = ?", (seeded.bytes,))
    other = new_id()
    await late.execute(INSERT_USER, (other.bytes, "later", "later@example.com"))

    assert (await late.attach()).outcome is AttachOutcome.USED_REMOTE_STATE
    assert (await late.c.push_pending()).outcome is PushOutcome.COMMITTED
    assert await server_ids(harness, user, "users") == {seeded, attached_edit, theirs, other}
    assert await late.ids("users") == {seeded, attached_edit, theirs, other}
