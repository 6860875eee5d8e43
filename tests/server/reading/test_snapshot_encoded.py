"""The SQL-rendered snapshot chunk is byte-identical to the Struct path."""

from __future__ import annotations

import msgspec
import pytest

from oversync_sa.errors import SnapshotSessionForbiddenError, SnapshotSessionNotFoundError
from oversync_sa.server import SyncService
from oversync_sa.server.snapshot import (
    create_snapshot_session,
    get_snapshot_chunk,
    get_snapshot_chunk_encoded,
)
from oversync_sa.wire.models import SnapshotChunkResponse
from tests.server.reading._support import ODD_KEYS, Actor, write

ALICE = Actor("alice")
_encode = msgspec.json.Encoder().encode


async def _snapshot(service: SyncService) -> str:
    await write(
        service, "alice",
        "INSERT INTO app.people (id, name) VALUES "
        "('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'Ann \"A\" <&>'),"
        " ('00000000-0000-4000-8000-000000000001', 'Bo');"
        "INSERT INTO app.notes (code, body) VALUES (:k0, 'x'), (:k1, NULL), (:k2, :k3),"
        " (:k3, 'y'), (:k4, 'é');"
        "INSERT INTO app.blobs (id, label, data) VALUES "
        "('00000000-0000-4000-8000-0000000000b1', 'blob', '\\x00ff10'::bytea),"
        " ('00000000-0000-4000-8000-0000000000b2', NULL, NULL)",
        **{f"k{i}": key for i, key in enumerate(ODD_KEYS)},
    )
    await write(service, "alice", "UPDATE app.people SET name = 'Bo 2' WHERE name = 'Bo'")
    await write(service, "bob", "INSERT INTO app.notes (code, body) VALUES ('bob', 'b')")
    session = await create_snapshot_session(service, ALICE)
    assert session.row_count == 9
    return session.snapshot_id


async def _both(service: SyncService, snapshot_id: str, **kwargs: int) -> tuple[
    SnapshotChunkResponse, bytes, bytes
]:
    structs = await get_snapshot_chunk(service, ALICE, snapshot_id, **kwargs)
    encoded = await get_snapshot_chunk_encoded(service, ALICE, snapshot_id, **kwargs)
    return structs, _encode(structs), _encode(encoded)


async def test_whole_snapshot_is_byte_identical(service: SyncService) -> None:
    snapshot_id = await _snapshot(service)
    structs, expected, actual = await _both(service, snapshot_id, max_rows=100)
    assert actual == expected
    assert len(structs.rows) == 9
    assert not structs.has_more
    assert {r.table for r in structs.rows} == {"people", "notes", "blobs"}
    assert set(ODD_KEYS) <= {r.key.get("code") for r in structs.rows}
    assert b"\\u0001" in actual
    assert msgspec.json.decode(actual, type=SnapshotChunkResponse) == structs


@pytest.mark.parametrize(
    "window",
    [
        {"max_rows": 1},
        {"max_rows": 4, "after_row_ordinal": 4},
        {"max_rows": 5, "after_row_ordinal": 4},
        {"after_row_ordinal": 8},
        {"after_row_ordinal": 9},
        {"after_row_ordinal": 50},
        {},
        # Any int64 cursor is valid: the range bounds must not overflow in SQL.
        {"after_row_ordinal": 2**63 - 1},
        {"after_row_ordinal": 2**63 - 3, "max_rows": 5},
    ],
)
async def test_chunk_windows_are_byte_identical(
    service: SyncService, window: dict[str, int]
) -> None:
    snapshot_id = await _snapshot(service)
    structs, expected, actual = await _both(service, snapshot_id, **window)
    assert actual == expected
    after = window.get("after_row_ordinal", 0)
    assert structs.next_row_ordinal == after + len(structs.rows)


async def test_encoded_chunk_checks_the_session_first(service: SyncService) -> None:
    snapshot_id = await _snapshot(service)
    with pytest.raises(SnapshotSessionForbiddenError):
        await get_snapshot_chunk_encoded(service, Actor("bob"), snapshot_id)
    with pytest.raises(SnapshotSessionNotFoundError):
        await get_snapshot_chunk_encoded(
            service, ALICE, "00000000-0000-4000-8000-000000000000"
        )
