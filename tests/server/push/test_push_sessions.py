"""Push create / chunk / delete (SERVER.md §5.1, §5.2, §5.5, §5.6) and their idempotency."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from oversync_sa.errors import (
    HistoryPrunedError,
    InitializationExpiredError,
    InitializationStaleError,
    PushChunkInvalidError,
    PushChunkOutOfOrderError,
    PushSessionExpiredError,
    PushSessionForbiddenError,
    PushSessionInvalidError,
    PushSessionNotFoundError,
    ScopeUninitializedError,
    SourceRetiredError,
    SourceSequenceOutOfOrderError,
)
from oversync_sa.server import SyncService
from oversync_sa.server.connect import connect
from oversync_sa.server.push_commit import commit_push_session
from oversync_sa.server.push_sessions import delete_push_session, parse_push_id
from oversync_sa.server.sources import retire_source
from oversync_sa.wire.models import ConnectRequest
from tests.server.push._support import (
    chunk,
    create,
    fetch,
    initialize,
    make_service,
    push,
    row,
    uid,
)


def _user(n: int, name: str = "U") -> dict[str, str]:
    return {"name": f"{name}{n}", "email": f"{n}@x"}


async def _expire(service: SyncService, push_id: str) -> None:
    async with service.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE sync.push_sessions SET expires_at = now() - interval '1 second' "
                    "WHERE push_id = CAST(:p AS uuid)"),
            {"p": push_id},
        )


async def test_create_validation_and_scope_gate(service: SyncService) -> None:
    with pytest.raises(PushSessionInvalidError, match="source_bundle_id must be > 0"):
        await create(service, "u1", "dev-a", 0, 1)
    with pytest.raises(PushSessionInvalidError, match="planned_row_count must be > 0"):
        await create(service, "u1", "dev-a", 1, 0)
    with pytest.raises(ScopeUninitializedError):
        await create(service, "u1", "dev-a", 1, 1)
    with pytest.raises(InitializationExpiredError, match="no longer active"):
        await create(service, "u1", "dev-a", 1, 1, init_id=uid(9))
    lease = await connect(service, "u1", "dev-a", ConnectRequest(has_local_pending_rows=True))
    with pytest.raises(PushSessionInvalidError, match="required while the scope is initializing"):
        await create(service, "u1", "dev-a", 1, 1)
    with pytest.raises(InitializationStaleError, match="does not own"):
        await create(service, "u1", "dev-b", 1, 1, init_id=lease.initialization_id)
    with pytest.raises(InitializationStaleError, match="does not match"):
        await create(service, "u1", "dev-a", 1, 1, init_id=lease.initialization_id.upper())
    seeded = await create(service, "u1", "dev-a", 1, 1, init_id=f" {lease.initialization_id} ")
    assert seeded.status == "staging"
    await initialize(service, "u2")
    with pytest.raises(PushSessionInvalidError, match="must be absent once"):
        await create(service, "u2", "dev-a", 1, 1, init_id=uid(9))


async def test_create_sequence_checks_and_replay(service: SyncService) -> None:
    await initialize(service, "u1")
    with pytest.raises(SourceSequenceOutOfOrderError, match="expected next source_bundle_id 1"):
        await create(service, "u1", "dev-a", 2, 1)
    done = await push(service, "u1", "dev-a", 1, [row("users", uid(1), payload=_user(1))])
    replay = await create(service, "u1", "dev-a", 1, 5)
    assert replay.status == "already_committed"
    assert (replay.bundle_seq, replay.source_id, replay.source_bundle_id, replay.row_count,
            replay.bundle_hash) == (done.bundle_seq, "dev-a", 1, 1, done.bundle_hash)
    assert replay.push_id == ""
    # Another source of the same user has its own sequence.
    assert (await create(service, "u1", "dev-b", 1, 1)).status == "staging"
    with pytest.raises(SourceSequenceOutOfOrderError):
        await create(service, "u1", "dev-a", 3, 1)
    # Once the bundle is at or below the retained floor the replay is history_pruned.
    async with service.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE sync.user_state SET retained_bundle_floor = 1"))
    pruned = r"\(dev-a, 1\).*max committed source_bundle_id is 1"
    with pytest.raises(HistoryPrunedError, match=pruned):
        await create(service, "u1", "dev-a", 1, 1)


async def test_retired_source_still_replays_but_cannot_create(service: SyncService) -> None:
    await initialize(service, "u1")
    done = await push(service, "u1", "dev-a", 1, [row("users", uid(1), payload=_user(1))])
    async with service.engine.begin() as conn:
        user_pk = await conn.scalar(sa.text("SELECT user_pk FROM sync.user_state"))
        assert user_pk is not None
        await retire_source(conn, user_pk, "dev-a", replaced_by="dev-z", reason="history_pruned")
    replay = await create(service, "u1", "dev-a", 1, 1)
    assert replay.bundle_seq == done.bundle_seq
    with pytest.raises(SourceRetiredError) as caught:
        await create(service, "u1", "dev-a", 2, 1)
    assert caught.value.to_body()["replaced_by_source_id"] == "dev-z"


async def test_recreate_replaces_uncommitted_session_and_cleans_expired(
    service: SyncService,
) -> None:
    await initialize(service, "u1")
    await initialize(service, "u2")
    old = await create(service, "u1", "dev-a", 1, 2)
    await chunk(service, "u1", old.push_id, 0, [row("users", uid(1), payload=_user(1))])
    new = await create(service, "u1", "dev-a", 1, 1)
    assert new.push_id != old.push_id
    with pytest.raises(PushSessionNotFoundError):
        await chunk(service, "u1", old.push_id, 1, [row("users", uid(2), payload=_user(2))])
    assert await fetch(service.engine, "SELECT count(*) FROM sync.push_session_rows") == [(0,)]
    # Expired sessions of any user disappear at the next create.
    other = await create(service, "u2", "dev-a", 1, 1)
    await _expire(service, other.push_id)
    await create(service, "u1", "dev-b", 1, 1)
    ids = {str(r[0]) for r in await fetch(service.engine, "SELECT push_id FROM sync.push_sessions")}
    assert other.push_id not in ids
    assert new.push_id in ids


async def test_chunk_lookup_ownership_expiry_order_and_planned_count(
    service: SyncService,
) -> None:
    await initialize(service, "u1")
    await initialize(service, "u2")
    session = await create(service, "u1", "dev-a", 1, 3)
    pid = session.push_id
    rows = [row("users", uid(i), payload=_user(i)) for i in range(1, 5)]
    # Validation comes before the lookup: an invalid chunk for an unknown id is a 400.
    with pytest.raises(PushChunkInvalidError):
        await chunk(service, "u1", "not-a-uuid", 0, [])
    for bad in ("not-a-uuid", uid(77), ""):
        with pytest.raises(PushSessionNotFoundError):
            await chunk(service, "u1", bad, 0, rows[:1])
    with pytest.raises(PushSessionForbiddenError):
        await chunk(service, "u2", pid, 0, rows[:1])
    with pytest.raises(PushChunkOutOfOrderError, match="expected start_row_ordinal 0, got 1"):
        await chunk(service, "u1", pid, 1, rows[:1])
    with pytest.raises(PushChunkInvalidError, match="chunk exceeds planned_row_count"):
        await chunk(service, "u1", pid, 0, rows)
    # Other forms of the same UUID reach the session; the echo is the value as sent.
    assert await chunk(service, "u1", " " + pid.upper() + " ", 0, rows[:1]) == 1
    assert await chunk(service, "u1", pid, 1, rows[1:2], source="dev-b") == 2
    with pytest.raises(PushChunkOutOfOrderError):
        await chunk(service, "u1", pid, 0, rows[2:3])
    await _expire(service, pid)
    with pytest.raises(PushSessionExpiredError):
        await chunk(service, "u1", pid, 2, rows[2:3])


async def test_chunk_refreshes_expiry(service: SyncService) -> None:
    await initialize(service, "u1")
    session = await create(service, "u1", "dev-a", 1, 2)
    async with service.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE sync.push_sessions SET expires_at = now() + interval '1 minute'")
        )
    await chunk(service, "u1", session.push_id, 0, [row("users", uid(1), payload=_user(1))])
    [(left,)] = await fetch(
        service.engine, "SELECT expires_at - now() > interval '14 minutes' FROM sync.push_sessions"
    )
    assert left is True


def test_parse_push_id_accepts_go_forms_only() -> None:
    pid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    for form in (pid, pid.upper(), "{" + pid + "}", "urn:uuid:" + pid, pid.replace("-", ""),
                 f"  {pid}\n"):
        assert str(parse_push_id(form)) == pid
    for bad in ("", "x", pid[:-1], "a0eebc99-9c0b4ef8-bb6d-6bb9bd380a111", "{" + pid):
        assert parse_push_id(bad) is None


async def test_delete_session(service: SyncService) -> None:
    await initialize(service, "u1")
    await initialize(service, "u2")
    session = await create(service, "u1", "dev-a", 1, 1)
    with pytest.raises(PushSessionNotFoundError):
        await delete_push_session(service, "u1", "dev-a", uid(5))
    with pytest.raises(PushSessionNotFoundError):
        await delete_push_session(service, "u1", "dev-a", "garbage")
    with pytest.raises(PushSessionForbiddenError):
        await delete_push_session(service, "u2", "dev-a", session.push_id)
    await delete_push_session(service, "u1", "dev-b", session.push_id)
    with pytest.raises(PushSessionNotFoundError):
        await commit_push_session(service, "u1", "dev-a", session.push_id)
    expired = await create(service, "u1", "dev-a", 1, 1)
    await _expire(service, expired.push_id)
    with pytest.raises(PushSessionExpiredError):
        await delete_push_session(service, "u1", "dev-a", expired.push_id)
    assert await fetch(service.engine, "SELECT count(*) FROM sync.push_sessions") == [(1,)]


async def test_max_rows_per_chunk_is_configurable(pg_engine: sa.ext.asyncio.AsyncEngine) -> None:
    service = await make_service(pg_engine, max_rows_per_push_chunk=2)
    await initialize(service, "u1")
    session = await create(service, "u1", "dev-a", 1, 3)
    rows = [row("users", uid(i), payload=_user(i)) for i in range(3)]
    with pytest.raises(PushChunkInvalidError, match="rows length 3 exceeds"):
        await chunk(service, "u1", session.push_id, 0, rows)
