"""Source identity between devices of ONE user: what the server guards, and what it cannot.

Not guarded, by design (SERVER.md §8):

* ``Oversync-Source-ID`` is chosen by the client. Authentication proves the *user*; any device
  holding that user's token may send any source id, including another device's. The server
  cannot tell two devices apart, so a device that sends another device's source id *and* its
  next ``source_bundle_id`` is accepted and the bundle is recorded under that source.
* Push chunks, commit and delete check the session's owner by user only: another device of the
  same user may continue or discard a session (the commit still uses the *session's* source).

Guarded, and tested here:

* per-source sequencing: ``source_bundle_id`` must be exactly the next one; a gap is
  ``409 source_sequence_out_of_order``, so a device borrowing a source id cannot skip ahead and
  cannot write under an id that was already used;
* a replay of a committed ``(source, source_bundle_id)`` is answered ``already_committed`` with
  the original bundle and writes nothing;
* the commit records the session's source, never the committing request's header;
* a retired source can no longer push (``409 source_retired``, structured body), whichever
  device tries, and a rotation can only be started by the source being retired.
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
    upload,
)

pytestmark = pytest.mark.postgres

USER: Final = "alice"


def _user(n: int) -> dict[str, Any]:
    return {"name": f"U{n}", "email": f"{n}@x"}


async def _create(client: httpx.AsyncClient, source: str, sbid: int) -> httpx.Response:
    return await client.post(
        "/sync/push-sessions", json={"source_bundle_id": sbid, "planned_row_count": 1},
        headers=headers(USER, source),
    )


async def test_a_borrowed_source_id_must_follow_its_sequence(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    await connect(client, USER, "device-a")
    await push(client, [row("users", uid(1), _user(1))], source="device-a")
    before = await dump(service.engine)
    # device-b claims device-a's source: skipping ahead is refused...
    assert_error(await _create(client, "device-a", 3), 409, "source_sequence_out_of_order")
    # ...and re-using a committed id only replays the original answer, writing nothing.
    replay = await _create(client, "device-a", 1)
    assert replay.status_code == 200, replay.text
    assert replay.json()["status"] == "already_committed"
    assert replay.json()["bundle_seq"] == 1
    assert await dump(service.engine) == before
    # Not guarded (documented above): the true next id is accepted from any device.
    result = await push(client, [row("users", uid(2), _user(2))], source="device-a", sbid=2)
    assert (result["source_id"], result["source_bundle_id"]) == ("device-a", 2)


async def test_commit_records_the_sessions_source_not_the_request_header(
    client: httpx.AsyncClient,
) -> None:
    await connect(client, USER, "device-a")
    push_id = await create_session(client, 1, source="device-a")
    assert (await upload(client, push_id, [row("users", uid(1), _user(1))],
                         source="device-b")).status_code == 200
    done = await commit(client, push_id, source="device-b")
    assert done.status_code == 200, done.text
    assert (done.json()["source_id"], done.json()["source_bundle_id"]) == ("device-a", 1)
    # device-b's own sequence was not consumed: its first bundle is still 1.
    staging = await _create(client, "device-b", 1)
    assert staging.json()["status"] == "staging", staging.text


async def test_a_retired_source_cannot_push(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    await connect(client, USER, "device-a")
    await push(client, [row("users", uid(1), _user(1))], source="device-a")
    rotation = {"source_replacement": {
        "previous_source_id": "device-a", "new_source_id": "device-a2",
        "reason": "history_pruned",
    }}
    # Only the source being retired may start its rotation.
    assert_error(
        await client.post("/sync/snapshot-sessions", json=rotation,
                          headers=headers(USER, "device-b")),
        400, "snapshot_session_invalid", "must match authenticated source_id",
    )
    rotated = await client.post("/sync/snapshot-sessions", json=rotation,
                                headers=headers(USER, "device-a"))
    assert rotated.status_code == 200, rotated.text
    before = await dump(service.engine)
    # The source header is the only device identity there is: whoever sends "device-a" now
    # is refused, at the next id and at any other.
    for sbid in (2, 3):
        resp = await _create(client, "device-a", sbid)
        assert_error(resp, 409, "source_retired")
        assert resp.json()["source_id"] == "device-a"
        assert resp.json()["replaced_by_source_id"] == "device-a2"
    assert await dump(service.engine) == before
    # The replacement starts its own sequence at 1.
    result = await push(client, [row("users", uid(2), _user(2))], source="device-a2")
    assert (result["source_id"], result["source_bundle_id"]) == ("device-a2", 1)


async def test_a_session_of_a_source_retired_meanwhile_cannot_commit(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    await connect(client, USER, "device-a")
    await push(client, [row("users", uid(1), _user(1))], source="device-a")
    push_id = await create_session(client, 1, source="device-a", sbid=2)
    assert (await upload(client, push_id, [row("users", uid(2), _user(2))],
                         source="device-a")).status_code == 200
    rotation = {"source_replacement": {
        "previous_source_id": "device-a", "new_source_id": "device-a2",
        "reason": "source_sequence_changed",
    }}
    assert (await client.post("/sync/snapshot-sessions", json=rotation,
                              headers=headers(USER, "device-a"))).status_code == 200
    before = await dump(service.engine)
    assert_error(await commit(client, push_id, source="device-b"), 409, "source_retired")
    assert await dump(service.engine) == before
