"""Two devices edit the same row; every resolver settles it and every device converges."""

from __future__ import annotations

from typing import Any

import pytest

from oversync_sa.client.conflicts import (
    ClientWinsResolver,
    ConflictContext,
    KeepLocal,
    KeepMerged,
    MergeResult,
    ServerWinsResolver,
)
from oversync_sa.client.errors import PushConflictRetryExhaustedError
from oversync_sa.client.results import PushOutcome
from oversync_sa.wire import Op
from tests.e2e.client._support import INSERT_USER, Device, Harness, new_id, new_user

pytestmark = pytest.mark.postgres


class Recording:
    """Wraps a resolver and keeps every context it was asked about."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[ConflictContext] = []

    def resolve(self, context: ConflictContext) -> Any:
        self.seen.append(context)
        return self.inner.resolve(context)


class MergeNameFromServerEmailFromLocal:
    def resolve(self, context: ConflictContext) -> MergeResult:
        assert context.server_row is not None
        assert context.local_payload is not None
        return KeepMerged({**context.server_row, "email": context.local_payload["email"]})


async def two_devices_with_row(
    harness: Harness, resolver: Any, user: str | None = None
) -> tuple[str, Device, Device, Any]:
    """A and B attached to one user, both holding the same synced row; B has ``resolver``."""
    user = user or new_user()
    a = await harness.device("a", user=user)
    b = await harness.device("b", user=user, resolver=resolver)
    await a.attach()
    await b.attach()
    row = new_id()
    await a.execute(INSERT_USER, (row.bytes, "Original", "original@example.com"))
    await a.c.sync()
    await b.c.sync()
    assert await b.ids("users") == {row}
    return user, a, b, row


async def names(device: Device) -> dict[Any, tuple[Any, ...]]:
    return await device.table("users", "name, email")


async def test_server_wins_discards_the_local_edit(harness: Harness) -> None:
    resolver = Recording(ServerWinsResolver())
    user, a, b, row = await two_devices_with_row(harness, resolver)
    await a.execute("UPDATE users SET name = 'From A' WHERE id = ?", (row.bytes,))
    await a.c.sync()
    await b.execute("UPDATE users SET name = 'From B' WHERE id = ?", (row.bytes,))

    report = await b.c.sync()

    assert [(c.table, c.local_op, c.base_row_version) for c in resolver.seen] == [
        ("users", Op.UPDATE, 1)
    ]
    assert resolver.seen[0].server_row_version == 2
    assert resolver.seen[0].server_row is not None
    assert resolver.seen[0].server_row["name"] == "From A"
    assert report.push_outcome is PushOutcome.NO_CHANGE
    assert await names(b) == {row: ("From A", "original@example.com")}
    assert await b.dirty_count() == 0
    assert [r["name"] for r in await harness.server_rows(user, "users", "name")] == ["From A"]
    # Nothing of B's edit reached the server: A stays as it was.
    await a.c.sync()
    assert await names(a) == await names(b)


async def test_server_wins_over_a_remote_delete(harness: Harness) -> None:
    user, a, b, row = await two_devices_with_row(harness, None)
    await a.execute("DELETE FROM users WHERE id = ?", (row.bytes,))
    await a.c.sync()
    await b.execute("UPDATE users SET name = 'Edited' WHERE id = ?", (row.bytes,))

    await b.c.sync()

    assert await b.ids("users") == set()
    assert await b.dirty_count() == 0
    assert await harness.server_rows(user, "users", "id") == []


async def test_client_wins_overwrites_the_server_and_peers(harness: Harness) -> None:
    resolver = Recording(ClientWinsResolver())
    user, a, b, row = await two_devices_with_row(harness, resolver)
    await a.execute("UPDATE users SET name = 'From A' WHERE id = ?", (row.bytes,))
    # A second, unrelated row from A: B has not seen A's bundle when it resolves.
    other = new_id()
    await a.execute(INSERT_USER, (other.bytes, "Other", "other@example.com"))
    await a.c.sync()
    await b.execute("UPDATE users SET name = 'From B' WHERE id = ?", (row.bytes,))

    report = await b.c.sync()

    assert len(resolver.seen) == 1
    assert report.push_outcome is PushOutcome.COMMITTED
    assert {r["name"] for r in await harness.server_rows(user, "users", "name")} == {
        "From B", "Other"
    }
    assert await names(b) == {
        row: ("From B", "original@example.com"), other: ("Other", "other@example.com")
    }
    await a.c.sync()
    assert await names(a) == await names(b)
    assert await a.dirty_count() == await b.dirty_count() == 0


async def test_merged_resolution_keeps_both_edits(harness: Harness) -> None:
    user, a, b, row = await two_devices_with_row(harness, MergeNameFromServerEmailFromLocal())
    await a.execute("UPDATE users SET name = 'Renamed by A' WHERE id = ?", (row.bytes,))
    await a.c.sync()
    await b.execute("UPDATE users SET email = 'b@example.com' WHERE id = ?", (row.bytes,))

    report = await b.c.sync()

    assert report.push_outcome is PushOutcome.COMMITTED
    merged = ("Renamed by A", "b@example.com")
    assert await names(b) == {row: merged}
    server = await harness.server_rows(user, "users", "name, email")
    assert [(r["name"], r["email"]) for r in server] == [merged]
    await a.c.sync()
    assert await names(a) == {row: merged}


async def test_conflict_retry_exhaustion_leaves_replayable_dirty_state(
    harness: Harness,
) -> None:
    user = new_user()

    class KeepLocalWhileServerKeepsChanging:
        """Keeps the local edit, but a server writer changes the row again every time."""

        interfere = True
        calls = 0

        async def resolve(self, context: ConflictContext) -> MergeResult:
            self.calls += 1
            if self.interfere:
                await harness.server_write(user, [(
                    "UPDATE business.users SET name = :n WHERE _sync_scope_id = :scope"
                    " AND id = :id",
                    {"n": f"server {self.calls}", "id": row},
                )])
            return KeepLocal()

    resolver = KeepLocalWhileServerKeepsChanging()
    _, a, b, row = await two_devices_with_row(harness, resolver, user)
    await a.execute("UPDATE users SET name = 'From A' WHERE id = ?", (row.bytes,))
    await a.c.sync()
    await b.execute("UPDATE users SET name = 'From B' WHERE id = ?", (row.bytes,))

    with pytest.raises(PushConflictRetryExhaustedError):
        await b.c.push_pending()

    assert resolver.calls == 3
    assert await b.dirty_count() == 1
    assert await b.outbox_count() == 0
    assert await names(b) == {row: ("From B", "original@example.com")}

    resolver.interfere = False
    assert (await b.c.sync()).push_outcome is PushOutcome.COMMITTED
    assert [r["name"] for r in await harness.server_rows(user, "users", "name")] == ["From B"]
    await a.c.sync()
    assert await names(a) == await names(b)


async def test_many_stale_rows_settle_in_one_push_when_each_round_progresses(
    harness: Harness,
) -> None:
    """Five stale rows under server-wins: each 409 names one row and each round settles it, so
    the push goes on past Go's 3 attempts (only rounds that settle nothing spend the budget)."""
    resolver = Recording(ServerWinsResolver())
    user = new_user()
    a = await harness.device("a", user=user)
    b = await harness.device("b", user=user, resolver=resolver)
    await a.attach()
    await b.attach()
    rows = [new_id() for _ in range(5)]
    for i, row in enumerate(rows):
        await a.execute(INSERT_USER, (row.bytes, f"Original {i}", f"u{i}@example.com"))
    await a.c.sync()
    await b.c.sync()
    for row in rows:
        await a.execute("UPDATE users SET name = 'From A' WHERE id = ?", (row.bytes,))
        await b.execute("UPDATE users SET name = 'From B' WHERE id = ?", (row.bytes,))
    await a.c.sync()

    report = await b.c.push_pending()

    assert report.outcome is PushOutcome.NO_CHANGE
    assert len(resolver.seen) == 5
    assert {ctx.table for ctx in resolver.seen} == {"users"}
    assert await b.dirty_count() == 0
    assert await b.outbox_count() == 0
    assert {name for name, _ in (await names(b)).values()} == {"From A"}
