"""Push commit (SERVER.md §5.3, §5.4): conflicts, apply order, FK cycles, seeding, concurrency."""

from __future__ import annotations

import asyncio
import base64
import json
import random

import msgspec
import pytest
import sqlalchemy as sa

from oversync_sa.errors import (
    InitializationStaleError,
    PushCommitInvalidError,
    PushConflictError,
    PushSessionCommitFailedError,
    PushSessionForbiddenError,
    PushSessionNotFoundError,
    SourceSequenceChangedError,
)
from oversync_sa.server import SyncService
from oversync_sa.server.connect import connect
from oversync_sa.server.push_commit import commit_push_session
from oversync_sa.wire.models import ConnectRequest, PushRequestRow
from tests.server.push._support import (
    chunk,
    committed_rows,
    create,
    fetch,
    initialize,
    make_service,
    push,
    row,
    uid,
)

INS, UPD, DEL = 1, 2, 3


def _user(n: int, name: str = "U") -> dict[str, str]:
    return {"name": f"{name}{n}", "email": f"{n}@x"}


async def _row_state(service: SyncService, user: str) -> dict[str, tuple[int, bool]]:
    rows = await fetch(
        service.engine,
        "SELECT encode(rs.key_bytes, 'hex'), rs.bundle_seq, rs.deleted FROM sync.row_state rs "
        "JOIN sync.user_state us USING (user_pk) WHERE us.user_id = :u AND rs.table_id = 8",
        u=user,
    )
    return {k: (int(s), bool(d)) for k, s, d in rows}


def _hex(key: str) -> str:
    return key.replace("-", "")


async def test_committed_order_follows_upload_order_for_every_op(service: SyncService) -> None:
    await initialize(service, "u1")
    keys = [uid(i) for i in (5, 3, 9, 1, 7, 2)]
    first = await push(service, "u1", "dev-a", 1, [row("users", k, payload=_user(1)) for k in keys])
    assert await committed_rows(service.engine, "u1", first.bundle_seq) == [
        ("users", k, INS) for k in keys
    ]
    shuffled = [keys[i] for i in (3, 0, 5, 1, 4, 2)]
    second = await push(service, "u1", "dev-a", 2, [
        row("users", k, op="UPDATE", base=1, payload={"name": "x"}) for k in shuffled
    ])
    assert await committed_rows(service.engine, "u1", second.bundle_seq) == [
        ("users", k, UPD) for k in shuffled
    ]
    mixed = [row("users", shuffled[0], op="DELETE", base=2),
             row("users", uid(40), payload=_user(40)),
             row("users", shuffled[1], op="UPDATE", base=2, payload={"email": "e"}),
             row("users", uid(30), payload=_user(30)),
             row("users", shuffled[2], op="DELETE", base=2),
             row("users", shuffled[3], op="DELETE", base=2)]
    third = await push(service, "u1", "dev-a", 3, mixed)
    assert [(k, op) for _, k, op in await committed_rows(service.engine, "u1", third.bundle_seq)] \
        == [(shuffled[0], DEL), (uid(40), INS), (shuffled[1], UPD), (uid(30), INS),
            (shuffled[2], DEL), (shuffled[3], DEL)]
    # Partial UPDATE keeps unlisted columns; defaults fill omitted INSERT columns.
    [(name, email, created)] = await fetch(
        service.engine,
        "SELECT name, email, created_at IS NOT NULL FROM business.users WHERE id = :k",
        k=shuffled[1],
    )
    assert (name, email, created) == ("x", "e", True)


@pytest.mark.parametrize(
    ("state", "op", "base", "message", "server"),
    [
        ("absent", "INSERT", 3, "expected missing row at version 0, got 3", (0, False, False)),
        ("live", "INSERT", 0, "expected base_row_version 1, got 0", (1, False, True)),
        ("live", "INSERT", 1, "row already exists at version 1", (1, False, True)),
        ("deleted", "INSERT", 1, "expected base_row_version 2, got 1", (2, True, False)),
        ("absent", "UPDATE", 0, "update conflict on business.users {k}: row does not exist",
         (0, False, False)),
        ("deleted", "UPDATE", 2, "row does not exist", (2, True, False)),
        ("live", "UPDATE", 7, "update conflict on business.users {k}: expected version 1, got 7",
         (1, False, True)),
        ("absent", "DELETE", 0, "delete conflict on business.users {k}: row does not exist",
         (0, False, False)),
        ("deleted", "DELETE", 2, "row does not exist", (2, True, False)),
        ("live", "DELETE", 0, "delete conflict on business.users {k}: expected version 1, got 0",
         (1, False, True)),
    ],
)
async def test_conflict_table(
    service: SyncService, state: str, op: str, base: int, message: str,
    server: tuple[int, bool, bool],
) -> None:
    await initialize(service, "u1")
    key = uid(1)
    sbid = 1
    if state != "absent":
        await push(service, "u1", "dev-a", sbid, [row("users", key, payload=_user(1))])
        sbid += 1
    if state == "deleted":
        await push(service, "u1", "dev-a", sbid, [row("users", key, op="DELETE", base=1)])
        sbid += 1
    ok = row("users", uid(2), payload=_user(2))
    bad = row("users", key, op=op, base=base, payload=None if op == "DELETE" else _user(9))
    session = await create(service, "u1", "dev-a", sbid, 2)
    await chunk(service, "u1", session.push_id, 0, [ok, bad])
    with pytest.raises(PushConflictError) as caught:
        await commit_push_session(service, "u1", "dev-a", session.push_id)
    err = caught.value
    assert message.format(k=key) in err.message
    assert err.conflict is not None
    version, deleted, has_row = server
    body = err.conflict
    assert (body["schema"], body["table"], body["key"], body["op"], body["base_row_version"],
            body["server_row_version"], body["server_row_deleted"]) == (
        "business", "users", {"id": key}, op, base, version, deleted)
    server_row = json.loads(bytes(body["server_row"]))
    if has_row:
        assert server_row["id"] == key
        assert server_row["name"] == "U1"
        assert "_sync_scope_id" not in server_row
    else:
        assert server_row is None
    # The whole bundle was rejected: the valid row was not applied and nothing was consumed.
    assert await fetch(service.engine, "SELECT count(*) FROM business.users WHERE id = :k",
                       k=uid(2)) == [(0,)]
    assert len(await fetch(service.engine, "SELECT 1 FROM sync.bundle_log")) == sbid - 1


async def test_conflict_server_row_is_wire_canonical_for_bytea(service: SyncService) -> None:
    await initialize(service, "u1")
    fid = uid(1)
    await push(service, "u1", "dev-a", 1, [
        row("files", fid, payload={"name": "f", "data": base64.b64encode(b"\x00\xff").decode()})
    ])
    [(stored,)] = await fetch(service.engine, "SELECT data FROM business.files")
    assert bytes(stored) == b"\x00\xff"
    session = await create(service, "u1", "dev-a", 2, 1)
    await chunk(service, "u1", session.push_id, 0, [row("files", fid, payload={"name": "g",
                                                                            "data": "AA=="})])
    with pytest.raises(PushConflictError) as caught:
        await commit_push_session(service, "u1", "dev-a", session.push_id)
    assert caught.value.conflict is not None
    assert json.loads(bytes(caught.value.conflict["server_row"])) == {
        "data": "AP8=", "id": fid, "name": "f"}
    # The error body is encodable as-is by msgspec (server_row is raw JSON).
    encoded = msgspec.json.encode(caught.value.to_body())
    assert b'"server_row":{' in encoded


async def test_other_users_rows_are_invisible(service: SyncService) -> None:
    for user in ("u1", "u2", "u3"):
        await initialize(service, user)
    key = uid(1)
    await push(service, "u1", "dev-a", 1, [row("users", key, payload=_user(1))])
    # The same visible key is a fresh row for another user ...
    await push(service, "u2", "dev-a", 1, [row("users", key, payload=_user(2, "V"))])
    await push(service, "u1", "dev-a", 2, [
        row("users", key, op="UPDATE", base=1, payload={"name": "z"})])
    # ... and absent for a user who never wrote it, whatever the base version.
    for op in ("UPDATE", "DELETE"):
        session = await create(service, "u3", "dev-a", 1, 1)
        await chunk(service, "u3", session.push_id, 0, [
            row("users", key, op=op, base=1, payload=None if op == "DELETE" else {"name": "q"})])
        with pytest.raises(PushConflictError, match="row does not exist"):
            await commit_push_session(service, "u3", "dev-a", session.push_id)
    rows = await fetch(service.engine,
                       "SELECT _sync_scope_id, name FROM business.users ORDER BY 1")
    assert rows == [("u1", "z"), ("u2", "V2")]


async def test_self_reference_cycle_and_cascade_in_one_session(service: SyncService) -> None:
    await initialize(service, "u1")
    root, child, grandchild = uid(1), uid(2), uid(3)
    team, member = uid(10), uid(11)
    rows = [
        # children before parents and a two-table cycle: constraints are deferred to COMMIT
        row("categories", grandchild, payload={"name": "g", "parent_id": child}),
        row("categories", child, payload={"name": "c", "parent_id": root}),
        row("categories", root, payload={"name": "r", "parent_id": None}),
        row("teams", team, payload={"name": "t", "captain_member_id": member}),
        row("team_members", member, payload={"name": "m", "team_id": team}),
    ]
    first = await push(service, "u1", "dev-a", 1, rows, chunk_size=2)
    assert first.row_count == 5
    # Deleting the root cascades to its descendants; the bundle carries the cascaded deletes.
    second = await push(service, "u1", "dev-a", 2, [row("categories", root, op="DELETE", base=1)])
    got = await committed_rows(service.engine, "u1", second.bundle_seq)
    assert got[0] == ("categories", root, DEL)
    assert sorted(got) == sorted([("categories", k, DEL) for k in (root, child, grandchild)])
    assert second.row_count == 3
    assert await fetch(service.engine, "SELECT count(*) FROM business.categories") == [(0,)]
    tombstones = await fetch(service.engine,
                             "SELECT count(*) FROM sync.row_state WHERE deleted AND table_id = 1")
    assert tombstones == [(3,)]


async def test_deferred_fk_violation_fails_at_commit_and_rolls_back(service: SyncService) -> None:
    await initialize(service, "u1")
    session = await create(service, "u1", "dev-a", 1, 1)
    await chunk(service, "u1", session.push_id, 0, [
        row("posts", uid(1), payload={"title": "t", "content": "c", "author_id": uid(99)})
    ])
    with pytest.raises(PushSessionCommitFailedError) as caught:
        await commit_push_session(service, "u1", "dev-a", session.push_id)
    assert "23503" in repr(caught.value.__cause__) or "foreign key" in str(caught.value.__cause__)
    # The client's own data broke the rule: the wire message names the table, the constraint
    # and the missing key (PostgreSQL's message and detail), so the row can be found and fixed.
    message = caught.value.message
    assert message.startswith("commit push session failed: ")
    assert 'table "posts" violates foreign key constraint' in message
    assert uid(99) in message
    assert await fetch(service.engine, "SELECT count(*) FROM business.posts") == [(0,)]
    assert await fetch(service.engine, "SELECT count(*) FROM sync.bundle_log") == [(0,)]
    # The session survives the rolled-back commit.
    assert await fetch(service.engine, "SELECT count(*) FROM sync.push_sessions") == [(1,)]


async def test_column_dropped_after_bootstrap_is_commit_failure(service: SyncService) -> None:
    # An unknown column is refused at chunk upload (tests/security); one dropped after
    # bootstrap is still in the runtime's column map, so only the commit can find out.
    async with service.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE business.users ADD COLUMN nope integer"))
    service = await make_service(service.engine)
    await initialize(service, "u1")
    session = await create(service, "u1", "dev-a", 1, 1)
    await chunk(service, "u1", session.push_id, 0, [
        row("users", uid(1), payload={"name": "a", "email": "e", "nope": 1})
    ])
    async with service.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE business.users DROP COLUMN nope"))
    with pytest.raises(PushSessionCommitFailedError) as caught:
        await commit_push_session(service, "u1", "dev-a", session.push_id)
    # Nothing the client can fix: the message names the column and tells the operator what to do.
    message = caught.value.message
    assert message.startswith("commit push session failed: registered table schema changed "
                              "after bootstrap")
    assert '"nope"' in message
    assert "restart the server" in message
    assert await fetch(service.engine, "SELECT count(*) FROM business.users") == [(0,)]
    assert await fetch(service.engine, "SELECT count(*) FROM sync.bundle_log") == [(0,)]


async def test_table_dropped_after_bootstrap_names_the_drift(service: SyncService) -> None:
    await initialize(service, "u1")
    session = await create(service, "u1", "dev-a", 1, 1)
    await chunk(service, "u1", session.push_id, 0, [row("users", uid(1), payload=_user(1))])
    async with service.engine.begin() as conn:
        await conn.execute(sa.text("DROP TABLE business.users CASCADE"))
    with pytest.raises(PushSessionCommitFailedError) as caught:
        await commit_push_session(service, "u1", "dev-a", session.push_id)
    assert "registered table schema changed after bootstrap" in caught.value.message
    assert "users" in caught.value.message


async def test_commit_staging_checks(service: SyncService) -> None:
    await initialize(service, "u1")
    await initialize(service, "u2")
    session = await create(service, "u1", "dev-a", 1, 3)
    pid = session.push_id
    await chunk(service, "u1", pid, 0, [row("users", uid(1), payload=_user(1))])
    with pytest.raises(PushCommitInvalidError, match="staged row count 1 does not match "
                                                     "planned_row_count 3"):
        await commit_push_session(service, "u1", "dev-a", pid)
    with pytest.raises(PushSessionForbiddenError):
        await commit_push_session(service, "u2", "dev-a", pid)
    with pytest.raises(PushSessionNotFoundError):
        await commit_push_session(service, "u1", "dev-a", "nope")
    await chunk(service, "u1", pid, 1, [row("users", uid(2), payload=_user(2)),
                                        row("users", uid(1), op="DELETE", base=0)])
    with pytest.raises(PushCommitInvalidError, match="duplicate target row in staged push "
                                                     f"session: business.users {uid(1)}"):
        await commit_push_session(service, "u1", "dev-a", pid)
    async with service.engine.begin() as conn:
        await conn.execute(sa.text(
            "UPDATE sync.push_session_rows SET row_ordinal = 7 WHERE row_ordinal = 2"))
    with pytest.raises(PushCommitInvalidError, match="not contiguous at row_ordinal 2"):
        await commit_push_session(service, "u1", "dev-a", pid)


async def test_commit_without_captured_effects_is_invalid(service: SyncService) -> None:
    await initialize(service, "u1")
    await push(service, "u1", "dev-a", 1, [row("users", uid(1), payload=_user(1))])
    async with service.engine.begin() as conn:  # desynchronise: row_state says live, row gone
        await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        await conn.execute(sa.text("DELETE FROM business.users"))
    session = await create(service, "u1", "dev-a", 2, 1)
    await chunk(service, "u1", session.push_id, 0, [
        row("users", uid(1), op="UPDATE", base=1, payload={"name": "n"})])
    with pytest.raises(PushCommitInvalidError, match="no captured business-table effects"):
        await commit_push_session(service, "u1", "dev-a", session.push_id)


async def test_idempotent_retries_and_ownership_per_user(service: SyncService) -> None:
    await initialize(service, "u1")
    session = await create(service, "u1", "dev-a", 1, 1)
    await chunk(service, "u1", session.push_id, 0, [row("users", uid(1), payload=_user(1))])
    # Another source of the same user commits; the bundle belongs to the session's source.
    done = await commit_push_session(service, "u1", "dev-b", session.push_id)
    assert (done.bundle_seq, done.source_id, done.source_bundle_id, done.row_count) == (
        1, "dev-a", 1, 1)
    assert len(done.bundle_hash) == 64
    with pytest.raises(PushSessionNotFoundError):
        await commit_push_session(service, "u1", "dev-a", session.push_id)
    replay = await create(service, "u1", "dev-a", 1, 1)
    assert (replay.status, replay.bundle_seq, replay.bundle_hash) == (
        "already_committed", 1, done.bundle_hash)
    [(state, watermark)] = await fetch(
        service.engine, "SELECT state, max_committed_source_bundle_id FROM sync.source_state")
    assert (state, watermark) == ("active", 1)


async def test_source_sequence_changed_between_create_and_commit(service: SyncService) -> None:
    await initialize(service, "u1")
    stale = await create(service, "u1", "dev-a", 1, 1)
    await chunk(service, "u1", stale.push_id, 0, [row("users", uid(1), payload=_user(1))])
    async with service.engine.begin() as conn:  # tuple committed behind the session's back
        await conn.execute(sa.text(
            "INSERT INTO sync.source_state (user_pk, source_id, state, "
            "max_committed_source_bundle_id) SELECT user_pk, 'dev-a', 'active', 1 "
            "FROM sync.user_state"))
    with pytest.raises(SourceSequenceChangedError, match="from staged 1 to 2 before commit"):
        await commit_push_session(service, "u1", "dev-a", stale.push_id)


async def test_seed_push_completes_initialization(service: SyncService) -> None:
    lease = await connect(service, "u1", "dev-a", ConnectRequest(has_local_pending_rows=True))
    done = await push(service, "u1", "dev-a", 1, [row("users", uid(1), payload=_user(1))],
                      init_id=lease.initialization_id)
    assert done.bundle_seq == 1
    [(code, by)] = await fetch(service.engine,
                               "SELECT state_code, initialized_by_source_id FROM sync.scope_state")
    assert (code, by) == (2, "dev-a")
    assert (await connect(service, "u1", "dev-b", ConnectRequest())).resolution \
        == "remote_authoritative"


@pytest.mark.parametrize("variant", ["expired", "taken_over", "empty_connect"])
async def test_seed_push_with_a_lost_lease_is_stale(service: SyncService, variant: str) -> None:
    lease = await connect(service, "u1", "dev-a", ConnectRequest(has_local_pending_rows=True))
    session = await create(service, "u1", "dev-a", 1, 2, lease.initialization_id)
    await chunk(service, "u1", session.push_id, 0, [row("users", uid(1), payload=_user(1))])
    async with service.engine.begin() as conn:
        await conn.execute(sa.text(
            "UPDATE sync.scope_state SET lease_expires_at = now() - interval '1 second'"))
    if variant == "taken_over":
        await connect(service, "u1", "dev-b", ConnectRequest(has_local_pending_rows=True))
    elif variant == "empty_connect":
        await connect(service, "u1", "dev-b", ConnectRequest())
    with pytest.raises(InitializationStaleError):
        await chunk(service, "u1", session.push_id, 1, [row("users", uid(2), payload=_user(2))])
    async with service.engine.begin() as conn:  # stage the last row behind the check's back
        await conn.execute(sa.text(
            "INSERT INTO sync.push_session_rows SELECT push_id, 1, table_id, "
            "decode('00000000000040008000000000000002', 'hex'), 1, 0, "
            "CAST(:p AS json) FROM sync.push_session_rows"), {"p": json.dumps(
                {"id": uid(2), **_user(2)})})
        await conn.execute(sa.text("UPDATE sync.push_sessions SET next_expected_row_ordinal = 2"))
    with pytest.raises(InitializationStaleError):
        await commit_push_session(service, "u1", "dev-a", session.push_id)


async def test_concurrent_pushes_of_two_sources_and_two_users(service: SyncService) -> None:
    for user in ("u1", "u2"):
        await initialize(service, user)

    async def run(user: str, source: str, base: int) -> list[int]:
        seqs = []
        for sbid in range(1, 5):
            key = uid(base + sbid)
            seqs.append((await push(service, user, source, sbid,
                                    [row("users", key, payload=_user(sbid))])).bundle_seq)
        return seqs

    results = await asyncio.gather(run("u1", "a", 100), run("u1", "b", 200),
                                   run("u2", "a", 300), run("u2", "b", 400))
    for pair in (results[0] + results[1], results[2] + results[3]):
        assert sorted(pair) == list(range(1, 9))  # gap-free per user


async def test_mixed_random_ops_match_a_python_model(service: SyncService) -> None:
    await initialize(service, "u1")
    rng = random.Random(1234)
    keys = [uid(i) for i in range(1, 25)]
    model: dict[str, tuple[int, bool]] = {}
    sbid = 0
    for _ in range(25):
        picked = rng.sample(keys, rng.randint(1, 12))
        rows: list[PushRequestRow] = []
        expected: list[tuple[str, str, int]] = []
        conflict = rng.random() < 0.15
        for i, key in enumerate(picked):
            version, deleted = model.get(key, (0, True))
            if key not in model or deleted:
                op, base = "INSERT", version
            else:
                op, base = rng.choice(["UPDATE", "DELETE"]), version
            if conflict and i == len(picked) - 1:
                base += 5
            payload = None if op == "DELETE" else {"name": f"n{rng.random()}", "email": "e"}
            rows.append(row("users", key, op=op, base=base, payload=payload))
            expected.append(("users", key, {"INSERT": INS, "UPDATE": UPD, "DELETE": DEL}[op]))
        if conflict:
            session = await create(service, "u1", "dev-a", sbid + 1, len(rows))
            await chunk(service, "u1", session.push_id, 0, rows)
            with pytest.raises(PushConflictError):
                await commit_push_session(service, "u1", "dev-a", session.push_id)
            continue
        sbid += 1
        done = await push(service, "u1", "dev-a", sbid, rows, chunk_size=5)
        assert await committed_rows(service.engine, "u1", done.bundle_seq) == expected
        for _, key, op in expected:
            model[key] = (done.bundle_seq, op == DEL)
    assert await _row_state(service, "u1") == {_hex(k): v for k, v in model.items()}
    live = {str(r[0]) for r in await fetch(service.engine, "SELECT id FROM business.users")}
    assert live == {k for k, (_, d) in model.items() if not d}
