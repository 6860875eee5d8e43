"""Contract error codes of committed rows, pull and the snapshot routes (SERVER.md §6, §9.2)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from oversync_sa.server import SyncService
from tests.http.http_support import headers, uid, user_row

Client = httpx.AsyncClient


def _error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = dict(resp.json())
    assert body["error"] == code
    return body


async def _commit_users(client: Client, count: int, sbid: int = 1) -> None:
    create = await client.post(
        "/sync/push-sessions", json={"source_bundle_id": sbid, "planned_row_count": count},
        headers=headers(),
    )
    push_id = create.json()["push_id"]
    rows = [user_row(uid(sbid * 100 + i)) for i in range(count)]
    await client.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": rows}, headers=headers(),
    )
    commit = await client.post(f"/sync/push-sessions/{push_id}/commit", headers=headers())
    assert commit.status_code == 200, commit.text


@pytest.fixture
async def seeded(client: Client) -> Client:
    """Alice's scope initialized with two one-row bundles."""
    resp = await client.post(
        "/sync/connect", json={"has_local_pending_rows": False}, headers=headers()
    )
    assert resp.status_code == 200
    await _commit_users(client, 1, 1)
    await _commit_users(client, 1, 2)
    return client


async def _raise_floor(service: SyncService, floor: int) -> None:
    async with service.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE sync.user_state SET retained_bundle_floor = :f WHERE user_id = 'alice'"
            ),
            {"f": floor},
        )


@pytest.mark.parametrize(
    "url",
    [
        "/sync/committed-bundles/abc/rows",
        "/sync/committed-bundles/0/rows",
        "/sync/committed-bundles/%201/rows",
        "/sync/committed-bundles/1/rows?max_rows=0",
        "/sync/committed-bundles/1/rows?after_row_ordinal=-1",
        "/sync/committed-bundles/1/rows?after_row_ordinal=1_0",
    ],
)
async def test_committed_rows_invalid(seeded: Client, url: str) -> None:
    _error(await seeded.get(url, headers=headers()), 400, "committed_bundle_chunk_invalid")


async def test_committed_rows_not_found_and_pruned(seeded: Client, service: SyncService) -> None:
    _error(await seeded.get("/sync/committed-bundles/9/rows", headers=headers()),
           404, "committed_bundle_not_found")
    await _raise_floor(service, 1)
    _error(await seeded.get("/sync/committed-bundles/1/rows", headers=headers()),
           409, "history_pruned")


@pytest.mark.parametrize(
    "query",
    [
        "after_bundle_seq=abc",
        "after_bundle_seq=-1",
        "max_bundles=0",
        "max_bundles=5001",
        "target_bundle_seq=-3",
        "after_bundle_seq=+",
    ],
)
async def test_pull_invalid_query(seeded: Client, query: str) -> None:
    _error(await seeded.get(f"/sync/pull?{query}", headers=headers()), 400, "invalid_request")


async def test_pull_pages_and_history_pruned(seeded: Client, service: SyncService) -> None:
    page = (await seeded.get("/sync/pull?max_bundles=1", headers=headers())).json()
    assert (len(page["bundles"]), page["has_more"], page["stable_bundle_seq"]) == (1, True, 2)
    await _raise_floor(service, 1)
    _error(await seeded.get("/sync/pull?after_bundle_seq=1", headers=headers()),
           409, "history_pruned")


async def test_pull_and_snapshot_need_an_initialized_scope(client: Client) -> None:
    _error(await client.get("/sync/pull", headers=headers("nobody")), 409, "scope_uninitialized")
    _error(await client.post("/sync/snapshot-sessions", headers=headers("nobody")),
           409, "scope_uninitialized")


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b'{"unknown": 1}',
        b'{"source_replacement": {"previous_source_id": "device-a", '
        b'"new_source_id": "device-b", "reason": "bogus"}}',
        b"{} {}",
        b"[1]",
    ],
)
async def test_snapshot_create_invalid(seeded: Client, content: bytes) -> None:
    resp = await seeded.post("/sync/snapshot-sessions", content=content, headers=headers())
    body = _error(resp, 400, "snapshot_session_invalid")
    assert body["message"] == "Failed to parse snapshot session request"


async def test_snapshot_create_with_replacement_of_another_source(seeded: Client) -> None:
    resp = await seeded.post(
        "/sync/snapshot-sessions",
        json={"source_replacement": {"previous_source_id": "elsewhere",
                                     "new_source_id": "device-z", "reason": "history_pruned"}},
        headers=headers(),
    )
    _error(resp, 400, "snapshot_session_invalid")


async def test_snapshot_chunk_and_delete_errors(seeded: Client) -> None:
    sid = (await seeded.post("/sync/snapshot-sessions", headers=headers())).json()["snapshot_id"]
    base = f"/sync/snapshot-sessions/{sid}"
    for query in ("max_rows=0", "after_row_ordinal=-1", "max_rows=x"):
        _error(await seeded.get(f"{base}?{query}", headers=headers()),
               400, "snapshot_chunk_invalid")
    _error(await seeded.get(f"/sync/snapshot-sessions/{uid(77)}", headers=headers()),
           404, "snapshot_session_not_found")
    _error(await seeded.get("/sync/snapshot-sessions/not-a-uuid", headers=headers()),
           404, "snapshot_session_not_found")
    _error(await seeded.delete(f"/sync/snapshot-sessions/{uid(77)}", headers=headers()),
           404, "snapshot_session_not_found")
    _error(await seeded.delete("/sync/snapshot-sessions/not-a-uuid", headers=headers()),
           404, "snapshot_session_not_found")


async def test_snapshot_expired_is_gone(seeded: Client, service: SyncService) -> None:
    sid = (await seeded.post("/sync/snapshot-sessions", headers=headers())).json()["snapshot_id"]
    async with service.engine.begin() as conn:
        await conn.execute(sa.text(
            "UPDATE sync.snapshot_sessions SET expires_at = now() - interval '1 minute'"))
    _error(await seeded.get(f"/sync/snapshot-sessions/{sid}", headers=headers()),
           410, "snapshot_session_expired")
    assert (await seeded.delete(f"/sync/snapshot-sessions/{sid}", headers=headers())
            ).status_code == 204
