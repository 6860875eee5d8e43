"""Snapshot sessions (SERVER.md §6.3): create, chunks, expiry, ownership, limits, fail-closed."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import (
    ScopeUninitializedError,
    SnapshotChunkInvalidError,
    SnapshotSessionCreateFailedError,
    SnapshotSessionExpiredError,
    SnapshotSessionForbiddenError,
    SnapshotSessionNotFoundError,
)
from oversync_sa.server import SyncService
from oversync_sa.server.pull import pull
from oversync_sa.server.snapshot import (
    cleanup_expired_snapshot_sessions,
    create_snapshot_session,
    delete_snapshot_session,
    get_snapshot_chunk,
)
from oversync_sa.wire.models import SnapshotRow
from tests.server.reading._support import (
    Actor,
    execute,
    make_service,
    note_inserts,
    scalar,
    write,
)

ALICE = Actor("alice")
BOB = Actor("bob")
P1 = "00000000-0000-4000-8000-0000000000b2"
P2 = "00000000-0000-4000-8000-0000000000a1"
BLOB = "00000000-0000-4000-8000-0000000000c3"


async def _all_rows(service: SyncService, snapshot_id: str, max_rows: int) -> list[SnapshotRow]:
    rows: list[SnapshotRow] = []
    after = 0
    while True:
        chunk = await get_snapshot_chunk(
            service, ALICE, snapshot_id, after_row_ordinal=after, max_rows=max_rows
        )
        assert chunk.next_row_ordinal == after + len(chunk.rows)
        rows.extend(chunk.rows)
        after = chunk.next_row_ordinal
        if not chunk.has_more:
            return rows


async def test_empty_initialized_scope(service: SyncService) -> None:
    await write(service, "alice", note_inserts("n", 1))
    await write(service, "alice", "DELETE FROM app.notes WHERE _sync_scope_id = :scope")
    session = await create_snapshot_session(service, ALICE)
    assert (session.snapshot_bundle_seq, session.row_count, session.byte_count) == (2, 0, 0)
    assert b"byte_count" not in msgspec.json.encode(session)
    assert session.expires_at.endswith("Z")


async def test_rows_are_ordered_versioned_and_paged(service: SyncService) -> None:
    await write(
        service, "alice",
        f"INSERT INTO app.people (id, name) VALUES ('{P1}', 'one'), ('{P2}', 'two');"
        "INSERT INTO app.notes (code, body) VALUES ('b', 'x'), ('a', NULL);"
        f"INSERT INTO app.blobs (id, label, data) VALUES ('{BLOB}', 'bin', '\\x0011ff'::bytea)",
    )
    await write(
        service, "alice",
        f"UPDATE app.people SET name = 'uno' WHERE _sync_scope_id = :scope AND id = '{P1}'",
    )
    await write(service, "bob", note_inserts("bob", 3))

    session = await create_snapshot_session(service, ALICE)
    assert (session.snapshot_bundle_seq, session.row_count) == (2, 5)
    rows = await _all_rows(service, session.snapshot_id, max_rows=2)
    # table_id order (blobs, notes, people), then key bytes.
    assert [(r.table, next(iter(r.key.values()))) for r in rows] == [
        ("blobs", BLOB), ("notes", "a"), ("notes", "b"), ("people", P2), ("people", P1),
    ]
    assert [r.row_version for r in rows] == [1, 1, 1, 1, 2]
    payloads: list[dict[str, Any]] = [msgspec.json.decode(bytes(r.payload)) for r in rows]
    assert payloads[0] == {
        "id": BLOB, "label": "bin", "data": base64.b64encode(b"\x00\x11\xff").decode()
    }
    assert payloads[1] == {"code": "a", "body": None}
    assert payloads[4] == {"id": P1, "name": "uno"}
    assert all("_sync_scope_id" not in p for p in payloads)
    assert session.byte_count == sum(len(bytes(r.payload)) for r in rows)


async def test_chunk_boundaries_and_validation(service: SyncService) -> None:
    await write(service, "alice", note_inserts("n", 3))
    sid = (await create_snapshot_session(service, ALICE)).snapshot_id
    exact = await get_snapshot_chunk(service, ALICE, sid, max_rows=3)
    assert (len(exact.rows), exact.has_more, exact.next_row_ordinal) == (3, False, 3)
    tail = await get_snapshot_chunk(service, ALICE, sid, after_row_ordinal=2, max_rows=3)
    assert ([r.key["code"] for r in tail.rows], tail.next_row_ordinal) == (["n0002"], 3)
    past = await get_snapshot_chunk(service, ALICE, sid, after_row_ordinal=7)
    assert (past.rows, past.has_more, past.next_row_ordinal) == ([], False, 7)
    assert past.snapshot_id == sid
    with pytest.raises(SnapshotChunkInvalidError):
        await get_snapshot_chunk(service, ALICE, sid, after_row_ordinal=-1)
    with pytest.raises(SnapshotChunkInvalidError):
        await get_snapshot_chunk(service, ALICE, sid, max_rows=0)
    with pytest.raises(SnapshotChunkInvalidError):
        await get_snapshot_chunk(service, ALICE, "")


async def test_chunk_size_is_clamped(pg_engine: AsyncEngine) -> None:
    service = await make_service(
        pg_engine, default_rows_per_snapshot_chunk=1, max_rows_per_snapshot_chunk=2
    )
    await write(service, "alice", note_inserts("n", 3))
    sid = (await create_snapshot_session(service, ALICE)).snapshot_id
    assert len((await get_snapshot_chunk(service, ALICE, sid)).rows) == 1
    assert len((await get_snapshot_chunk(service, ALICE, sid, max_rows=50)).rows) == 2


async def test_chunk_reads_never_modify_the_session(service: SyncService) -> None:
    await write(service, "alice", note_inserts("n", 2))
    sid = (await create_snapshot_session(service, ALICE)).snapshot_id
    await execute(
        service.engine,
        "CREATE FUNCTION public.no_update() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'snapshot session updated'; END $$",
        "CREATE TRIGGER no_update BEFORE UPDATE ON sync.snapshot_sessions "
        "FOR EACH ROW EXECUTE FUNCTION public.no_update()",
    )
    assert len((await get_snapshot_chunk(service, ALICE, sid)).rows) == 2


async def test_sessions_are_isolated_per_user(service: SyncService) -> None:
    await write(service, "alice", note_inserts("n", 1))
    await write(service, "bob", note_inserts("n", 1))
    sid = (await create_snapshot_session(service, ALICE)).snapshot_id
    with pytest.raises(SnapshotSessionForbiddenError):
        await get_snapshot_chunk(service, BOB, sid)
    with pytest.raises(SnapshotSessionForbiddenError):
        await delete_snapshot_session(service, BOB, sid)
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(SnapshotSessionNotFoundError):
            await get_snapshot_chunk(service, ALICE, missing)
        with pytest.raises(SnapshotSessionNotFoundError):
            await delete_snapshot_session(service, ALICE, missing)
    await delete_snapshot_session(service, ALICE, sid)
    with pytest.raises(SnapshotSessionNotFoundError):
        await get_snapshot_chunk(service, ALICE, sid)
    assert await scalar(service.engine, "SELECT count(*) FROM sync.snapshot_session_rows") == 0


async def test_expiry_and_cleanup(service: SyncService) -> None:
    await write(service, "alice", note_inserts("n", 1))
    expired = (await create_snapshot_session(service, ALICE)).snapshot_id
    kept = (await create_snapshot_session(service, ALICE)).snapshot_id
    await execute(
        service.engine,
        "UPDATE sync.snapshot_sessions SET expires_at = now() - interval '1 second' "
        "WHERE snapshot_id = :sid",
        sid=uuid.UUID(expired),
    )
    with pytest.raises(SnapshotSessionExpiredError):
        await get_snapshot_chunk(service, ALICE, expired)
    # The next create sweeps expired sessions of every user.
    await create_snapshot_session(service, ALICE)
    with pytest.raises(SnapshotSessionNotFoundError):
        await get_snapshot_chunk(service, ALICE, expired)
    assert len((await get_snapshot_chunk(service, ALICE, kept)).rows) == 1
    assert await cleanup_expired_snapshot_sessions(service.engine) == 0


async def test_delete_ignores_expiry(service: SyncService) -> None:
    await write(service, "alice", note_inserts("n", 1))
    sid = (await create_snapshot_session(service, ALICE)).snapshot_id
    await execute(
        service.engine,
        "UPDATE sync.snapshot_sessions SET expires_at = now() - interval '1 hour'",
    )
    await delete_snapshot_session(service, ALICE, sid)
    assert await scalar(service.engine, "SELECT count(*) FROM sync.snapshot_sessions") == 0


async def test_uninitialized_scope_cannot_snapshot(service: SyncService) -> None:
    with pytest.raises(ScopeUninitializedError):
        await create_snapshot_session(service, ALICE)


async def test_ttl_comes_from_config(pg_engine: AsyncEngine) -> None:
    service = await make_service(pg_engine, snapshot_session_ttl=timedelta(seconds=90))
    await write(service, "alice", note_inserts("n", 1))
    await create_snapshot_session(service, ALICE)
    seconds = await scalar(
        service.engine,
        "SELECT extract(epoch FROM expires_at - now()) FROM sync.snapshot_sessions",
    )
    assert 80 < float(seconds) <= 90


@pytest.mark.parametrize("orphan", ["business_row", "row_state"])
async def test_fails_closed_when_row_state_and_tables_disagree(
    service: SyncService, orphan: str
) -> None:
    await write(service, "alice", note_inserts("n", 2))
    if orphan == "business_row":
        statement = (
            "INSERT INTO app.notes (_sync_scope_id, code, body) VALUES ('alice', 'ghost', 'x')"
        )
    else:
        statement = "DELETE FROM app.notes WHERE code = 'n0000'"
    async with service.engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(statement))
    with pytest.raises(SnapshotSessionCreateFailedError, match="inconsistent"):
        await create_snapshot_session(service, ALICE)
    assert await scalar(service.engine, "SELECT count(*) FROM sync.snapshot_sessions") == 0


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_rows_per_snapshot_session": 2}, "row_count 3 exceeds limit 2"),
        ({"max_bytes_per_snapshot_session": 40}, "byte_count .* exceeds limit 40"),
    ],
)
async def test_limits_fail_the_create(
    pg_engine: AsyncEngine, limits: dict[str, int], message: str
) -> None:
    service = await make_service(pg_engine, **limits)
    await write(service, "alice", note_inserts("n", 3))
    with pytest.raises(SnapshotSessionCreateFailedError, match=message):
        await create_snapshot_session(service, ALICE)
    assert await scalar(service.engine, "SELECT count(*) FROM sync.snapshot_sessions") == 0


async def test_limits_at_the_boundary_pass(pg_engine: AsyncEngine) -> None:
    probe = await make_service(pg_engine)
    await write(probe, "alice", note_inserts("n", 3))
    size = (await create_snapshot_session(probe, ALICE)).byte_count
    service = await make_service(
        pg_engine, max_rows_per_snapshot_session=3, max_bytes_per_snapshot_session=size
    )
    session = await create_snapshot_session(service, ALICE)
    assert (session.row_count, session.byte_count) == (3, size)


async def test_snapshot_racing_commits_equals_history_at_its_seq(service: SyncService) -> None:
    await write(service, "alice", note_inserts("seed", 20))

    async def writer() -> None:
        for i in range(25):
            await write(
                service, "alice",
                f"INSERT INTO app.notes (code, body) VALUES ('w{i}', 'v');"
                f"UPDATE app.notes SET body = 'u{i}' WHERE _sync_scope_id = :scope "
                f"AND code = 'seed{i % 20:04d}';"
                f"DELETE FROM app.notes WHERE _sync_scope_id = :scope AND code = 'w{i - 1}'",
            )

    task = asyncio.create_task(writer())
    sessions = []
    for _ in range(6):
        sessions.append(await create_snapshot_session(service, ALICE))
        await asyncio.sleep(0.01)
    await task

    for session in sessions:
        # Replay the committed history up to the snapshot's seq and compare.
        expected: dict[str, tuple[int, Any]] = {}
        history = await pull(service, ALICE, target_bundle_seq=session.snapshot_bundle_seq)
        for bundle in history.bundles:
            for row in bundle.rows:
                code = row.key["code"]
                if row.op == "DELETE":
                    expected.pop(code, None)
                else:
                    expected[code] = (row.row_version, msgspec.json.decode(bytes(row.payload)))
        rows = await _all_rows(service, session.snapshot_id, max_rows=500)
        actual = {
            r.key["code"]: (r.row_version, msgspec.json.decode(bytes(r.payload))) for r in rows
        }
        assert actual == expected
