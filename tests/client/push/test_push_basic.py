"""End-to-end push against the scripted server: commit, chunking, paging, replay."""

from __future__ import annotations

import msgspec

from oversync_sa.client.push import PushTransferStats, push_pending
from oversync_sa.client.results import PushOutcome

from .conftest import Harness


async def test_nothing_pending_makes_no_request(harness: Harness) -> None:
    report = await push_pending(await harness.runtime())
    assert report.outcome is PushOutcome.NO_CHANGE
    assert harness.server.requests == []


async def test_commit_replays_authoritatively(harness: Harness) -> None:
    await harness.sql("INSERT INTO docs VALUES ('d1', 'hello')")
    report = await push_pending(await harness.runtime())

    assert report.outcome is PushOutcome.COMMITTED
    assert report.status is not None
    assert report.status.pending.pending_row_count == 0
    assert await harness.dirty() == []
    assert await harness.outbox_state() == ("none", 0, 0, 0)
    assert await harness.row_state("docs", '{"id":"d1"}') == (1, 0)
    assert await harness.checkpoint() == 1
    assert await harness.next_bundle_id() == 2
    assert await harness.value("SELECT apply_mode FROM _sync_apply_state") == 0
    assert await harness.value("SELECT COUNT(*) FROM _sync_push_stage") == 0
    (create,) = harness.server.bodies("create")
    assert create == {"source_bundle_id": 1, "planned_row_count": 1}
    # Writes after the replay are captured again.
    await harness.sql("UPDATE docs SET body = 'again' WHERE id = 'd1'")
    assert [(t, op, base) for t, _, op, base, _ in await harness.dirty()] == [
        ("docs", "UPDATE", 1)
    ]


async def test_chunked_upload_and_paged_fetch(harness: Harness) -> None:
    for i in range(5):
        await harness.sql("INSERT INTO docs VALUES (?, 'x')", (f"d{i}",))
    stats = PushTransferStats()
    runtime = await harness.runtime(upload_limit=2, download_limit=2)
    report = await push_pending(runtime, stats=stats)

    assert report.outcome is PushOutcome.COMMITTED
    chunks = harness.server.bodies("chunk")
    assert [c["start_row_ordinal"] for c in chunks] == [0, 2, 4]
    assert [len(c["rows"]) for c in chunks] == [2, 2, 1]
    assert [r["key"]["id"] for c in chunks for r in c["rows"]] == [f"d{i}" for i in range(5)]
    pages = harness.server.named("rows")
    assert [p.url.params.get("after_row_ordinal") for p in pages] == [None, "1", "3"]
    assert all(p.url.params["max_rows"] == "2" for p in pages)
    assert (stats.sessions_created, stats.chunks_uploaded, stats.committed_bundle_chunks_read) == (
        1, 3, 3,
    )
    assert await harness.value("SELECT COUNT(*) FROM _sync_row_state") == 5


async def test_no_op_freeze_is_committed(harness: Harness) -> None:
    """INSERT then DELETE of a never-synced key sends nothing and leaves nothing (§12.24)."""
    await harness.sql("INSERT INTO docs VALUES ('gone', 'x')")
    await harness.sql("DELETE FROM docs WHERE id = 'gone'")
    assert len(await harness.dirty()) == 1
    report = await push_pending(await harness.runtime())
    assert report.outcome is PushOutcome.NO_CHANGE
    assert await harness.dirty() == []
    assert harness.server.requests == []


async def test_freeze_orders_parents_first_and_deletes_children_first(harness: Harness) -> None:
    await harness.synced("authors", "old-a", "'old-a', 'Old'", 3)
    await harness.synced("books", "old-b", "'old-b', 'Old', 'old-a'", 3)
    # Children captured before parents on purpose.
    await harness.sql("INSERT INTO books VALUES ('b1', 'T', NULL)")
    await harness.sql("INSERT INTO authors VALUES ('a1', 'A')")
    await harness.sql("UPDATE books SET author_id = 'a1' WHERE id = 'b1'")
    async with harness.engine.begin() as conn:  # parent deleted first, in one transaction
        await conn.exec_driver_sql("DELETE FROM authors WHERE id = 'old-a'")
        await conn.exec_driver_sql("DELETE FROM books WHERE id = 'old-b'")
    await push_pending(await harness.runtime())

    (chunk,) = harness.server.bodies("chunk")
    assert [(r["table"], r["op"], r["key"]["id"]) for r in chunk["rows"]] == [
        ("authors", "INSERT", "a1"),
        ("books", "INSERT", "b1"),
        ("books", "DELETE", "old-b"),
        ("authors", "DELETE", "old-a"),
    ]
    assert [r.get("base_row_version") for r in chunk["rows"]] == [0, 0, 3, 3]
    assert "payload" not in chunk["rows"][3]
    assert await harness.rows("SELECT id FROM books") == [("b1",)]


async def test_blob_uuid_columns_go_out_as_uuid_and_base64(harness: Harness) -> None:
    file_id = bytes.fromhex("0123456789abcdef0123456789abcdef")
    await harness.sql("INSERT INTO files VALUES (?, 'f', ?)", (file_id, bytes.fromhex("deadbeef")))
    await push_pending(await harness.runtime())
    (chunk,) = harness.server.bodies("chunk")
    (row,) = chunk["rows"]
    assert row["key"] == {"id": "01234567-89ab-cdef-0123-456789abcdef"}
    assert row["payload"] == {
        "id": "01234567-89ab-cdef-0123-456789abcdef", "name": "f", "data": "3q2+7w==",
    }
    # Replay wrote the committed row back with the same bytes.
    assert await harness.rows("SELECT id, data FROM files") == [
        (file_id, bytes.fromhex("deadbeef"))
    ]
    assert await harness.row_state("files", '{"id":"0123456789abcdef0123456789abcdef"}') == (1, 0)


async def test_server_normalised_payload_is_what_replay_writes(harness: Harness) -> None:
    """The committed payload, not the uploaded one, becomes local state."""
    await harness.sql("INSERT INTO docs VALUES ('d1', 'raw')")

    runtime = await harness.runtime()
    original = harness.server.commit_session

    def normalising_commit(push_id: str):  # type: ignore[no-untyped-def]
        done = original(push_id)
        done.rows[0]["payload"] = {"id": "d1", "body": "normalised"}
        from .conftest import hash_rows

        done.hash = hash_rows(done.rows)
        return done

    harness.server.commit_session = normalising_commit  # type: ignore[method-assign]
    assert (await push_pending(runtime)).outcome is PushOutcome.COMMITTED
    assert await harness.rows("SELECT body FROM docs") == [("normalised",)]
    # The live row differed from the upload only because the server changed it: no requeue.
    # (The uploaded local payload equals the live row, so the committed row is applied.)
    assert await harness.dirty() == []
    assert msgspec.json.decode(harness.server.named("chunk")[0].content)["rows"][0]["payload"] == {
        "id": "d1", "body": "raw",
    }
