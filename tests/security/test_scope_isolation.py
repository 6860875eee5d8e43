"""One user can neither read nor write another user's rows, through any route (SERVER.md §8).

Every registered row carries its owner in ``_sync_scope_id``; every read filters on it, every
session is checked against its owner, and every write goes through the owner guard. Each test
lets an intruder try one route against an owner's data and checks both the answer and that the
owner's data (the whole database, where the attempt could write) is untouched.
"""

from __future__ import annotations

from typing import Any, Final

import httpx
import pytest

from oversync_sa.server import SyncService
from tests.http.http_support import headers, uid
from tests.security._support import (
    assert_error,
    commit,
    connect,
    create_session,
    dump,
    push,
    row,
    scalar,
    upload,
)

pytestmark = pytest.mark.postgres

OWNER: Final = "owner-user"
INTRUDER: Final = "intruder"
PARENT: Final = uid(10)


def _user(name: str = "Owner", email: str = "owner@example.com") -> dict[str, Any]:
    return {"name": name, "email": email}


async def _owner_with_rows(client: httpx.AsyncClient) -> None:
    """The owner has three bundles (users row, post row, another users row); the intruder is
    connected and has one bundle of its own."""
    await connect(client, OWNER)
    await push(client, [row("users", PARENT, _user())], user=OWNER)
    await push(client, [row("posts", uid(11), {"title": "t", "content": "c", "author_id": PARENT})],
               user=OWNER, sbid=2)
    await push(client, [row("users", uid(12), _user("Second", "2@x"))], user=OWNER, sbid=3)
    await connect(client, INTRUDER)
    await push(client, [row("users", uid(20), _user("Mine", "mine@x"))], user=INTRUDER)


async def test_committed_rows_of_a_bundle_only_another_user_has(
    client: httpx.AsyncClient,
) -> None:
    await _owner_with_rows(client)
    for seq in (2, 3):
        resp = await client.get(f"/sync/committed-bundles/{seq}/rows", headers=headers(INTRUDER))
        assert_error(resp, 404, "committed_bundle_not_found")
        assert OWNER not in resp.text
        assert PARENT not in resp.text
    # The intruder's own bundle 1 is its own row, not the owner's bundle 1.
    own = (await client.get("/sync/committed-bundles/1/rows", headers=headers(INTRUDER))).json()
    assert [r["key"] for r in own["rows"]] == [{"id": uid(20)}]


async def test_pull_and_snapshot_show_only_the_callers_rows(client: httpx.AsyncClient) -> None:
    await _owner_with_rows(client)
    pulled = (await client.get("/sync/pull", headers=headers(INTRUDER))).json()
    keys = [r["key"]["id"] for b in pulled["bundles"] for r in b["rows"]]
    assert keys == [uid(20)]
    # A target beyond the intruder's own history does not reach into the owner's.
    beyond = await client.get("/sync/pull?after_bundle_seq=0&target_bundle_seq=3",
                              headers=headers(INTRUDER))
    assert beyond.status_code == 200, beyond.text
    assert [r["key"]["id"] for b in beyond.json()["bundles"] for r in b["rows"]] == [uid(20)]
    session = (await client.post("/sync/snapshot-sessions", headers=headers(INTRUDER))).json()
    chunk = await client.get(f"/sync/snapshot-sessions/{session['snapshot_id']}",
                             headers=headers(INTRUDER))
    assert [r["key"]["id"] for r in chunk.json()["rows"]] == [uid(20)]


async def test_another_users_push_session_cannot_be_used(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    await connect(client, OWNER)
    push_id = await create_session(client, 1, user=OWNER)
    assert (await upload(client, push_id, [row("users", uid(1), _user())],
                         user=OWNER)).status_code == 200
    await connect(client, INTRUDER)
    before = await dump(service.engine)
    attempts = [
        await upload(client, push_id, [row("users", uid(2), _user())], start=1, user=INTRUDER),
        await upload(client, push_id, [row("users", uid(2), _user())], start=0, user=INTRUDER),
        await commit(client, push_id, user=INTRUDER),
        await client.delete(f"/sync/push-sessions/{push_id}", headers=headers(INTRUDER)),
    ]
    for resp in attempts:
        assert_error(resp, 403, "push_session_forbidden")
        assert OWNER not in resp.text
    assert await dump(service.engine) == before
    # The owner's session is intact and commits into the owner's scope.
    assert (await commit(client, push_id, user=OWNER)).status_code == 200
    assert await scalar(service.engine, "SELECT _sync_scope_id FROM business.users") == OWNER


async def test_another_users_snapshot_session_cannot_be_read_or_deleted(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    await _owner_with_rows(client)
    sid = (await client.post("/sync/snapshot-sessions", headers=headers(OWNER))).json()[
        "snapshot_id"
    ]
    before = await dump(service.engine)
    for resp in (
        await client.get(f"/sync/snapshot-sessions/{sid}", headers=headers(INTRUDER)),
        await client.get(f"/sync/snapshot-sessions/{sid}?after_row_ordinal=0&max_rows=1",
                         headers=headers(INTRUDER)),
        await client.delete(f"/sync/snapshot-sessions/{sid}", headers=headers(INTRUDER)),
    ):
        assert_error(resp, 403, "snapshot_session_forbidden")
        assert OWNER not in resp.text
        assert PARENT not in resp.text
    assert await dump(service.engine) == before
    owner_chunk = await client.get(f"/sync/snapshot-sessions/{sid}", headers=headers(OWNER))
    assert len(owner_chunk.json()["rows"]) == 3


async def test_foreign_key_to_a_parent_in_another_scope_fails_the_commit(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    """Foreign keys include the scope column, so a parent that exists only in the owner's
    scope does not exist for the intruder: the deferred FK check fails the whole commit."""
    await _owner_with_rows(client)
    push_id = await create_session(client, 1, user=INTRUDER, sbid=2)
    post = row("posts", uid(30), {"title": "t", "content": "c", "author_id": PARENT})
    assert (await upload(client, push_id, [post], user=INTRUDER)).status_code == 200
    before = await dump(service.engine)
    resp = await commit(client, push_id, user=INTRUDER)
    assert_error(resp, 500, "push_session_commit_failed", "violates foreign key constraint")
    # The message describes the intruder's own row only: nothing of the owner's scope.
    assert OWNER not in resp.text
    assert await dump(service.engine) == before
    assert await scalar(service.engine, "SELECT count(*) FROM business.posts WHERE id = :k",
                        k=uid(30)) == 0


async def test_same_key_in_another_scope_is_a_separate_row(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    await _owner_with_rows(client)
    owner_row = await scalar(
        service.engine,
        "SELECT row_to_json(u)::text FROM business.users u WHERE id = :k", k=PARENT,
    )
    result = await push(client, [row("users", PARENT, _user("Twin", "twin@x"))],
                        user=INTRUDER, sbid=2)
    assert result["row_count"] == 1
    rows = await scalar(
        service.engine,
        "SELECT json_agg(json_build_array(_sync_scope_id, name) ORDER BY _sync_scope_id)::text "
        "FROM business.users WHERE id = :k", k=PARENT,
    )
    assert rows == f'[["{INTRUDER}", "Twin"], ["{OWNER}", "Owner"]]'
    assert await scalar(
        service.engine,
        "SELECT row_to_json(u)::text FROM business.users u WHERE id = :k "
        "AND _sync_scope_id = :o", k=PARENT, o=OWNER,
    ) == owner_row


@pytest.mark.parametrize("op", ["UPDATE", "DELETE"])
async def test_update_or_delete_of_another_scopes_key_is_a_conflict_without_its_data(
    client: httpx.AsyncClient, service: SyncService, op: str
) -> None:
    """``row_state`` is per user, so another scope's key is "absent" (§5.3 step 9): the answer
    is a conflict with no server row, never the owner's row or version."""
    await _owner_with_rows(client)
    payload = _user("Hijack", "h@x") if op == "UPDATE" else None
    push_id = await create_session(client, 1, user=INTRUDER, sbid=2)
    staged = await upload(client, push_id, [row("users", PARENT, payload, op=op, base=1)],
                          user=INTRUDER)
    assert staged.status_code == 200, staged.text
    before = await dump(service.engine)
    resp = await commit(client, push_id, user=INTRUDER)
    assert_error(resp, 409, "push_conflict", "row does not exist")
    conflict = resp.json()["conflict"]
    assert conflict["server_row"] is None
    assert conflict["server_row_version"] == 0
    assert "Owner" not in resp.text
    assert OWNER not in resp.text
    assert await dump(service.engine) == before


async def test_another_users_initialization_id_seeds_nothing(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    """An initialization lease belongs to one user's scope: replaying its id from another
    user never creates a seed session, and the owner's lease is left as it was."""
    lease = await client.post("/sync/connect", json={"has_local_pending_rows": True},
                              headers=headers(OWNER, "device-a"))
    assert lease.json()["resolution"] == "initialize_local", lease.text
    stolen = lease.json()["initialization_id"]
    before = await dump(service.engine)
    body = {"source_bundle_id": 1, "planned_row_count": 1, "initialization_id": stolen}
    uninitialized = await client.post("/sync/push-sessions", json=body,
                                      headers=headers(INTRUDER, "device-a"))
    assert_error(uninitialized, 410, "initialization_expired")
    await connect(client, INTRUDER, "device-a")
    after_connect = await dump(service.engine)
    initialized = await client.post("/sync/push-sessions", json=body,
                                    headers=headers(INTRUDER, "device-a"))
    assert_error(initialized, 400, "push_session_invalid", "must be absent")
    assert await dump(service.engine) == after_connect
    assert after_connect["sync.push_sessions"] == before["sync.push_sessions"] == []
    # The owner's seed push still works with its own lease.
    seed = await client.post("/sync/push-sessions", json=body, headers=headers(OWNER, "device-a"))
    assert seed.json()["status"] == "staging", seed.text


async def test_a_rotation_only_touches_the_callers_own_source(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    """Source ids are per user: an intruder that sends the owner's source id and retires it
    retires only its own source of that name."""
    await connect(client, OWNER, "device-a")
    await push(client, [row("users", uid(1), _user())], user=OWNER, source="device-a")
    await connect(client, INTRUDER, "device-a")
    rotation = {"source_replacement": {
        "previous_source_id": "device-a", "new_source_id": "device-z", "reason": "history_pruned",
    }}
    rotated = await client.post("/sync/snapshot-sessions", json=rotation,
                                headers=headers(INTRUDER, "device-a"))
    assert rotated.status_code == 200, rotated.text
    result = await push(client, [row("users", uid(2), _user())], user=OWNER, source="device-a",
                        sbid=2)
    assert (result["source_id"], result["source_bundle_id"]) == ("device-a", 2)
    intruder = await client.post(
        "/sync/push-sessions", json={"source_bundle_id": 1, "planned_row_count": 1},
        headers=headers(INTRUDER, "device-a"),
    )
    assert_error(intruder, 409, "source_retired")
