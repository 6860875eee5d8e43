"""Happy paths of every sync route, in the order a client uses them."""

from __future__ import annotations

from typing import Any

import httpx

from tests.http.http_support import headers, uid, user_row

Client = httpx.AsyncClient


async def _connect(client: Client, user: str = "alice", pending: bool = False) -> dict[str, Any]:
    resp = await client.post(
        "/sync/connect", json={"has_local_pending_rows": pending}, headers=headers(user)
    )
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def _push(client: Client, rows: list[dict[str, Any]], sbid: int = 1,
                user: str = "alice") -> dict[str, Any]:
    create = await client.post(
        "/sync/push-sessions",
        json={"source_bundle_id": sbid, "planned_row_count": len(rows)},
        headers=headers(user),
    )
    assert create.status_code == 200, create.text
    push_id = create.json()["push_id"]
    chunk = await client.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": rows},
        headers=headers(user),
    )
    assert chunk.status_code == 200, chunk.text
    commit = await client.post(f"/sync/push-sessions/{push_id}/commit", headers=headers(user))
    assert commit.status_code == 200, commit.text
    return dict(commit.json())


async def test_connect_push_commit_rows_pull(client: Client) -> None:
    assert (await _connect(client))["resolution"] == "initialize_empty"

    create = await client.post(
        "/sync/push-sessions",
        json={"source_bundle_id": 1, "planned_row_count": 2, "source_id": "ignored"},
        headers=headers(),
    )
    assert create.status_code == 200
    assert create.headers["content-type"] == "application/json"
    assert create.content.endswith(b"}\n")
    body = create.json()
    assert body["status"] == "staging"
    assert body["planned_row_count"] == 2
    push_id = body["push_id"]

    chunk = await client.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": [user_row(uid(1)), user_row(uid(2), "Bob")]},
        headers=headers(),
    )
    assert chunk.status_code == 200
    assert chunk.json() == {"push_id": push_id, "next_expected_row_ordinal": 2}

    commit = await client.post(f"/sync/push-sessions/{push_id}/commit", headers=headers())
    assert commit.status_code == 200
    committed = commit.json()
    assert committed["bundle_seq"] == 1
    assert committed["source_id"] == "device-a"
    assert committed["row_count"] == 2

    rows = await client.get(
        "/sync/committed-bundles/1/rows", params={"max_rows": "1"}, headers=headers()
    )
    assert rows.status_code == 200
    page = rows.json()
    assert page["bundle_hash"] == committed["bundle_hash"]
    assert len(page["rows"]) == 1
    assert page["has_more"] is True
    rest = await client.get(
        "/sync/committed-bundles/1/rows",
        params={"after_row_ordinal": str(page["next_row_ordinal"])},
        headers=headers(),
    )
    assert rest.status_code == 200
    assert rest.json()["has_more"] is False

    pulled = await client.get("/sync/pull", headers=headers("alice", "device-b"))
    assert pulled.status_code == 200
    pull = pulled.json()
    assert pull["stable_bundle_seq"] == 1
    assert [b["bundle_seq"] for b in pull["bundles"]] == [1]
    assert pull["has_more"] is False


async def test_push_session_delete_is_204(client: Client) -> None:
    await _connect(client)
    create = await client.post(
        "/sync/push-sessions",
        json={"source_bundle_id": 1, "planned_row_count": 1},
        headers=headers(),
    )
    push_id = create.json()["push_id"]
    resp = await client.delete(f"/sync/push-sessions/{push_id}", headers=headers())
    assert resp.status_code == 204
    assert resp.content == b""
    again = await client.delete(f"/sync/push-sessions/{push_id}", headers=headers())
    assert again.status_code == 404
    assert again.json()["error"] == "push_session_not_found"


async def test_snapshot_session_lifecycle(client: Client) -> None:
    await _connect(client)
    await _push(client, [user_row(uid(1)), user_row(uid(2), "Bob"), user_row(uid(3), "Cy")])

    created = await client.post("/sync/snapshot-sessions", headers=headers())
    assert created.status_code == 200, created.text
    snap = created.json()
    assert snap["snapshot_bundle_seq"] == 1
    assert snap["row_count"] == 3
    sid = snap["snapshot_id"]

    first = await client.get(
        f"/sync/snapshot-sessions/{sid}", params={"max_rows": "2"}, headers=headers()
    )
    assert first.status_code == 200
    chunk = first.json()
    assert chunk["snapshot_id"] == sid
    assert (len(chunk["rows"]), chunk["next_row_ordinal"], chunk["has_more"]) == (2, 2, True)
    second = await client.get(
        f"/sync/snapshot-sessions/{sid}", params={"after_row_ordinal": "2"}, headers=headers()
    )
    assert (second.json()["next_row_ordinal"], second.json()["has_more"]) == (3, False)

    deleted = await client.delete(f"/sync/snapshot-sessions/{sid}", headers=headers())
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = await client.get(f"/sync/snapshot-sessions/{sid}", headers=headers())
    assert gone.status_code == 404
    assert gone.json()["error"] == "snapshot_session_not_found"


async def test_snapshot_create_with_empty_body_and_whitespace(client: Client) -> None:
    await _connect(client)
    resp = await client.post("/sync/snapshot-sessions", content=b"  \n", headers=headers())
    assert resp.status_code == 200
    assert resp.json()["row_count"] == 0
    assert "byte_count" not in resp.json()


async def test_capabilities_with_and_without_actor(client: Client) -> None:
    anonymous = await client.get("/sync/capabilities", headers={
        "Authorization": headers()["Authorization"]})
    assert anonymous.status_code == 200
    caps = anonymous.json()
    assert caps["protocol_version"] == "v1"
    assert caps["features"]["connect_lifecycle"] is True
    assert caps["features"]["bundle_change_watch"] is True
    assert "business.users" in caps["registered_tables"]
    with_actor = await client.get("/sync/capabilities", headers=headers())
    assert with_actor.json() == caps


async def test_health_and_status_need_no_auth(client: Client) -> None:
    health = await client.get("/syncx/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    status = await client.get("/syncx/status")
    assert status.status_code == 200
    assert status.json()["lifecycle"] == "running"
    assert status.content.endswith(b"\n")
