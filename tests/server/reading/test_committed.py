"""Committed-bundle rows (SERVER.md §6.1): ordinals, paging, floor, isolation, validation."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import (
    CommittedBundleChunkInvalidError,
    CommittedBundleNotFoundError,
    CommittedBundleRowsFailedError,
    HistoryPrunedError,
)
from oversync_sa.server import SyncService
from oversync_sa.server.committed import fetch_committed_bundle_rows
from oversync_sa.wire.hashing import bundle_hash_of_received_rows
from oversync_sa.wire.keys import Op
from oversync_sa.wire.models import BundleRow
from tests.server.reading._support import (
    Actor,
    make_service,
    note_inserts,
    scalar,
    set_floor,
    write,
)

ALICE = Actor("alice")


async def _pages(service: SyncService, seq: int, max_rows: int) -> list[tuple[int, bool, int]]:
    """(rows returned, has_more, next_row_ordinal) per page until has_more is false."""
    pages: list[tuple[int, bool, int]] = []
    after: int | None = None
    while True:
        page = await fetch_committed_bundle_rows(
            service, ALICE, seq, after_row_ordinal=after, max_rows=max_rows
        )
        pages.append((len(page.rows), page.has_more, page.next_row_ordinal))
        if not page.has_more:
            return pages
        after = page.next_row_ordinal


async def test_pages_use_zero_based_wire_ordinals_and_reassemble_the_bundle(
    service: SyncService,
) -> None:
    bundle = await write(service, "alice", note_inserts("n", 5), writer="device-a")

    pages = await _pages(service, bundle.bundle_seq, 2)
    assert pages == [(2, True, 1), (2, True, 3), (1, False, 4)]

    rows: list[BundleRow] = []
    after: int | None = None
    while True:
        page = await fetch_committed_bundle_rows(
            service, ALICE, bundle.bundle_seq, after_row_ordinal=after, max_rows=2
        )
        assert (page.bundle_seq, page.source_id, page.source_bundle_id) == (1, "device-a", 1)
        assert (page.row_count, page.bundle_hash) == (5, bundle.bundle_hash)
        rows.extend(page.rows)
        if not page.has_more:
            break
        after = page.next_row_ordinal
    assert [bytes(r.payload) for r in rows] == [bytes(r.payload) for r in bundle.rows]
    assert [r.key for r in rows] == [r.key for r in bundle.rows]
    assert bundle_hash_of_received_rows(rows)[0] == bundle.bundle_hash


async def test_exact_boundaries(service: SyncService) -> None:
    await write(service, "alice", note_inserts("n", 4))

    full = await fetch_committed_bundle_rows(service, ALICE, 1, max_rows=4)
    assert (len(full.rows), full.has_more, full.next_row_ordinal) == (4, False, 3)
    one_short = await fetch_committed_bundle_rows(service, ALICE, 1, max_rows=3)
    assert (len(one_short.rows), one_short.has_more, one_short.next_row_ordinal) == (3, True, 2)
    last = await fetch_committed_bundle_rows(service, ALICE, 1, after_row_ordinal=2, max_rows=3)
    assert [r.key["code"] for r in last.rows] == ["n0003"]
    assert (last.has_more, last.next_row_ordinal) == (False, 3)
    # Past the end the cursor is echoed; an omitted cursor on an empty page would answer 0.
    beyond = await fetch_committed_bundle_rows(service, ALICE, 1, after_row_ordinal=3)
    assert (beyond.rows, beyond.has_more, beyond.next_row_ordinal) == ([], False, 3)
    far = await fetch_committed_bundle_rows(service, ALICE, 1, after_row_ordinal=50)
    assert (far.rows, far.next_row_ordinal) == ([], 50)


async def test_default_and_clamped_max_rows(pg_engine: AsyncEngine) -> None:
    service = await make_service(
        pg_engine,
        default_rows_per_committed_bundle_chunk=2,
        max_rows_per_committed_bundle_chunk=3,
    )
    await write(service, "alice", note_inserts("n", 5))
    assert len((await fetch_committed_bundle_rows(service, ALICE, 1)).rows) == 2
    clamped = await fetch_committed_bundle_rows(service, ALICE, 1, max_rows=100)
    assert (len(clamped.rows), clamped.has_more) == (3, True)


async def test_delete_rows_carry_no_payload_and_keys_decode_per_kind(
    service: SyncService,
) -> None:
    person = "0f8fad5b-d9cb-469f-a165-70867728950e"
    await write(
        service, "alice",
        f"INSERT INTO app.people (id, name) VALUES ('{person}', 'P');"
        "INSERT INTO app.notes (code, body) VALUES ('ü-key', 'x')",
    )
    await write(service, "alice", "DELETE FROM app.notes WHERE _sync_scope_id = :scope")
    first = await fetch_committed_bundle_rows(service, ALICE, 1)
    assert [r.key for r in first.rows] == [{"id": person}, {"code": "ü-key"}]
    deleted = (await fetch_committed_bundle_rows(service, ALICE, 2)).rows[0]
    assert (deleted.op, deleted.row_version, bytes(deleted.payload)) == (Op.DELETE, 2, b"")


async def test_history_pruned_at_or_below_floor_even_when_rows_remain(
    service: SyncService,
) -> None:
    for i in range(3):
        await write(service, "alice", note_inserts(f"b{i}-", 1))
    await set_floor(service.engine, "alice", 2)

    for seq in (1, 2):
        with pytest.raises(HistoryPrunedError):
            await fetch_committed_bundle_rows(service, ALICE, seq)
    assert len((await fetch_committed_bundle_rows(service, ALICE, 3)).rows) == 1
    # Only pull counts history_pruned answers.
    assert await scalar(
        service.engine, "SELECT is_called FROM sync.history_pruned_error_seq"
    ) is False


async def test_another_users_bundle_is_not_found(service: SyncService) -> None:
    await write(service, "alice", note_inserts("alice", 1))
    for i in range(3):
        await write(service, "bob", note_inserts(f"bob{i}-", 2))

    with pytest.raises(CommittedBundleNotFoundError):
        await fetch_committed_bundle_rows(service, ALICE, 3)
    own = await fetch_committed_bundle_rows(service, ALICE, 1)
    assert [r.key["code"] for r in own.rows] == ["alice0000"]


async def test_unknown_user_is_an_internal_error(service: SyncService) -> None:
    with pytest.raises(CommittedBundleRowsFailedError):
        await fetch_committed_bundle_rows(service, Actor("nobody"), 1)


@pytest.mark.parametrize(
    ("seq", "after", "max_rows", "message"),
    [
        (0, None, None, "bundle_seq must be > 0"),
        (-4, None, None, "bundle_seq must be > 0"),
        (1, -1, None, "after_row_ordinal must be >= 0"),
        (1, None, 0, "max_rows must be > 0"),
        (1, None, -2, "max_rows must be > 0"),
    ],
)
async def test_validation(
    service: SyncService, seq: int, after: int | None, max_rows: int | None, message: str
) -> None:
    with pytest.raises(CommittedBundleChunkInvalidError, match=message):
        await fetch_committed_bundle_rows(
            service, ALICE, seq, after_row_ordinal=after, max_rows=max_rows
        )
