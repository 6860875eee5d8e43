"""A lost commit reply whose bundle the server stored with normalised values is still ours.

The ``already_committed`` proof compares the frozen outbox with the committed rows; a mismatch
now moves the outbox to a fresh source and pushes it again, so a false mismatch re-sends our
own committed rows. PostgreSQL re-renders ``timestamptz`` values in its session time zone and
trims fractional zeros; exact big integers and bytea travel unchanged. None of that may look
like another writer's bundle.
"""

from __future__ import annotations

import pytest

from oversync_sa.client.conflicts import ClientWinsResolver
from oversync_sa.client.results import PushOutcome
from tests.e2e.client._support import (
    NO_RETRY,
    Harness,
    LossyTransport,
    is_commit,
    new_id,
    new_user,
)

pytestmark = pytest.mark.postgres

INSERT_TYPED = (
    "INSERT INTO typed_rows (id, name, note, count_value, enabled_flag, rating, data, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


@pytest.mark.parametrize("created_at", [
    "2026-03-24T18:42:11Z",
    "2026-03-24T18:42:11.500000Z",
    "2026-03-24T20:42:11.25+02:00",
])
async def test_lost_reply_with_server_normalised_timestamp_is_our_bundle(
    harness: Harness, created_at: str
) -> None:
    user = new_user()
    network = LossyTransport()
    device = await harness.device("device", user=user, transport=network, retry=NO_RETRY)
    await device.attach()
    source = device.c.runtime.source_id
    row = new_id()
    await device.execute(
        INSERT_TYPED, (row.bytes, "n", None, 2**60 + 1, 1, 1.25, b"\x00\xff", created_at)
    )
    network.drop_reply_after(is_commit)
    with pytest.raises(Exception, match="reply lost"):
        await device.c.sync()

    report = await device.c.sync()

    assert report.push_outcome is PushOutcome.COMMITTED
    assert device.c.runtime.source_id == source
    heads = await harness.server_scalar(
        "SELECT next_bundle_seq - 1 FROM sync.user_state WHERE user_id = :u", u=user
    )
    assert heads == 1
    assert await device.dirty_count() == await device.outbox_count() == 0


@pytest.mark.parametrize(
    "created_at",
    [
        "2026-03-24 18:42:11",  # naive text, as SQLite's datetime() writes it
        "2026-03-24 18:42:11.250000",  # SQLAlchemy's SQLite DateTime storage
    ],
)
async def test_lost_reply_with_naive_timestamp_is_our_bundle_for_a_client_wins_device(
    harness: Harness, created_at: str
) -> None:
    """PostgreSQL reads naive text in a ``timestamptz`` column in its session time zone and
    renders it back with that zone's offset: the wall clock is unchanged. Taking that for a
    foreign bundle re-pushed our row under a fresh source; a client-wins device then wrote its
    already committed value over a peer's later edit (lost update)."""
    user = new_user()
    network = LossyTransport()
    device = await harness.device(
        "device", user=user, transport=network, retry=NO_RETRY, resolver=ClientWinsResolver()
    )
    await device.attach()
    peer = await harness.device("peer", user=user)
    await peer.attach()
    source = device.c.runtime.source_id
    row = new_id()
    await device.execute(INSERT_TYPED, (row.bytes, "mine", None, 1, 1, None, None, created_at))
    network.drop_reply_after(is_commit)
    with pytest.raises(Exception, match="reply lost"):
        await device.c.sync()
    await peer.c.sync()
    await peer.execute("UPDATE typed_rows SET name = 'peer' WHERE id = ?", (row.bytes,))
    await peer.c.sync()

    report = await device.c.sync()

    server = await harness.server_scalar(
        "SELECT name FROM business.typed_rows WHERE id = :id", id=row
    )
    assert server == "peer"
    assert report.push_outcome is PushOutcome.COMMITTED
    assert device.c.runtime.source_id == source
    assert (await device.table("typed_rows", "name"))[row] == ("peer",)
    assert await device.dirty_count() == await device.outbox_count() == 0
