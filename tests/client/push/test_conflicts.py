"""Conflict resolution (§6): every resolver outcome, invalid results and the retry budget."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from oversync_sa.client.conflicts import (
    AcceptServer,
    ClientWinsResolver,
    ConflictContext,
    KeepLocal,
    KeepMerged,
    MergeResult,
    PerTableResolver,
    ServerWinsResolver,
)
from oversync_sa.client.errors import (
    InvalidConflictResolutionError,
    PushConflictRetryExhaustedError,
)
from oversync_sa.client.push import push_pending
from oversync_sa.client.results import PushOutcome
from oversync_sa.errors import PushConflictError

from .conftest import Harness

FILE_ID = "0123456789abcdef0123456789abcdef"
FILE_UUID = "01234567-89ab-cdef-0123-456789abcdef"


def conflict(
    table: str = "docs",
    key: str = "d1",
    op: str = "UPDATE",
    *,
    base: int = 1,
    version: int = 2,
    deleted: bool = False,
    row: dict[str, Any] | None = None,
) -> httpx.Response:
    return httpx.Response(409, json={
        "error": "push_conflict", "message": "conflict",
        "conflict": {
            "schema": "business", "table": table, "key": {"id": key}, "op": op,
            "base_row_version": base, "server_row_version": version,
            "server_row_deleted": deleted, "server_row": row,
        },
    })


class Recording:
    """A resolver that records its contexts and answers with a fixed result."""

    def __init__(self, result: object) -> None:
        self.result = result
        self.contexts: list[ConflictContext] = []

    def resolve(self, context: ConflictContext) -> MergeResult:
        self.contexts.append(context)
        return self.result  # type: ignore[return-value]


async def _edited_doc(harness: Harness) -> None:
    await harness.synced("docs", "d1", "'d1', 'base'", 1)
    await harness.sql("UPDATE docs SET body = 'local' WHERE id = 'd1'")


async def test_server_wins_adopts_the_server_row(harness: Harness) -> None:
    await _edited_doc(harness)
    harness.server.push_script("commit", conflict(row={"id": "d1", "body": "server"}))
    report = await push_pending(await harness.runtime(), resolver=ServerWinsResolver())

    assert report.outcome is PushOutcome.NO_CHANGE
    assert await harness.rows("SELECT body FROM docs") == [("server",)]
    assert await harness.row_state("docs", '{"id":"d1"}') == (2, 0)
    assert await harness.dirty() == []
    assert await harness.outbox_state() == ("none", 0, 0, 0)
    assert await harness.next_bundle_id() == 1
    assert await harness.checkpoint() == 0


async def test_default_resolver_is_server_wins(harness: Harness) -> None:
    await _edited_doc(harness)
    harness.server.push_script("create", conflict(deleted=True))
    assert (await push_pending(await harness.runtime())).outcome is PushOutcome.NO_CHANGE
    assert await harness.rows("SELECT * FROM docs") == []
    assert await harness.row_state("docs", '{"id":"d1"}') == (2, 1)


async def test_server_wins_on_missing_row_forgets_row_state(harness: Harness) -> None:
    await _edited_doc(harness)
    harness.server.push_script("commit", conflict())
    await push_pending(await harness.runtime())
    assert await harness.rows("SELECT * FROM docs") == []
    assert await harness.row_state("docs", '{"id":"d1"}') is None


async def test_client_wins_repushes_on_top_of_server_version(harness: Harness) -> None:
    await _edited_doc(harness)
    harness.server.next_seq = 3
    harness.server.push_script("commit", conflict(row={"id": "d1", "body": "server"}))
    resolver = Recording(KeepLocal())
    report = await push_pending(await harness.runtime(), resolver=resolver)

    assert report.outcome is PushOutcome.COMMITTED
    (ctx,) = resolver.contexts
    assert (ctx.local_op, ctx.local_payload, ctx.server_row) == (
        "UPDATE", {"id": "d1", "body": "local"}, {"id": "d1", "body": "server"},
    )
    creates = harness.server.bodies("create")
    assert [c["source_bundle_id"] for c in creates] == [1, 1]
    second = harness.server.bodies("chunk")[-1]["rows"][0]
    assert (second["base_row_version"], second["payload"]) == (2, {"id": "d1", "body": "local"})
    assert await harness.rows("SELECT body FROM docs") == [("local",)]
    assert await harness.row_state("docs", '{"id":"d1"}') == (3, 0)
    assert await harness.next_bundle_id() == 2


async def test_keep_merged_writes_and_pushes_the_merge(harness: Harness) -> None:
    await _edited_doc(harness)
    harness.server.push_script("commit", conflict(row={"id": "d1", "body": "server"}))
    resolver = Recording(KeepMerged(b'{"id":"d1","body":"merged"}'))
    assert (await push_pending(await harness.runtime(), resolver=resolver)).outcome is (
        PushOutcome.COMMITTED
    )
    second = harness.server.bodies("chunk")[-1]["rows"][0]
    assert (second["base_row_version"], second["payload"]) == (2, {"id": "d1", "body": "merged"})
    assert await harness.rows("SELECT body FROM docs") == [("merged",)]


async def test_siblings_of_a_rejected_bundle_are_resent(harness: Harness) -> None:
    await _edited_doc(harness)
    await harness.sql("INSERT INTO docs VALUES ('d2', 'sibling')")
    harness.server.push_script("commit", conflict(row={"id": "d1", "body": "server"}))
    await push_pending(await harness.runtime())
    first, second = harness.server.bodies("chunk")
    assert [r["key"]["id"] for r in first["rows"]] == ["d1", "d2"]
    assert [r["key"]["id"] for r in second["rows"]] == ["d2"]
    assert [c["source_bundle_id"] for c in harness.server.bodies("create")] == [1, 1]
    assert await harness.row_state("docs", '{"id":"d2"}') == (1, 0)


async def test_per_table_resolver_routes_by_table(harness: Harness) -> None:
    await _edited_doc(harness)
    harness.server.push_script("commit", conflict(row={"id": "d1", "body": "server"}))
    docs = Recording(KeepLocal())
    resolver = PerTableResolver(default=Recording(AcceptServer()), tables={"DOCS": docs})
    await push_pending(await harness.runtime(), resolver=resolver)
    assert len(docs.contexts) == 1


async def test_async_resolver_is_awaited(harness: Harness) -> None:
    await _edited_doc(harness)
    harness.server.push_script("commit", conflict(row={"id": "d1", "body": "server"}))

    class Async:
        async def resolve(self, context: ConflictContext) -> MergeResult:
            return KeepLocal()

    assert (await push_pending(await harness.runtime(), resolver=Async())).outcome is (
        PushOutcome.COMMITTED
    )


@pytest.mark.parametrize(
    ("local", "reply", "result", "dirty"),
    [
        # KeepMerged can never resolve a DELETE.
        ("delete", conflict(op="DELETE", row={"id": "d1", "body": "s"}),
         KeepMerged({"id": "d1", "body": "m"}), ("DELETE", 1, None)),
        # Keeping an UPDATE whose server row is gone.
        ("update", conflict(deleted=True), KeepLocal(),
         ("UPDATE", 1, '{"id":"d1","body":"local"}')),
        ("update", conflict(deleted=True), KeepMerged({"id": "d1", "body": "m"}),
         ("UPDATE", 1, '{"id":"d1","body":"local"}')),
        # Malformed merged payloads (wrong shape, mixed-case members, missing column).
        ("update", conflict(row={"id": "d1", "body": "s"}), KeepMerged(b"[1]"),
         ("UPDATE", 1, '{"id":"d1","body":"local"}')),
        ("update", conflict(row={"id": "d1", "body": "s"}), KeepMerged({"id": "d1", "Body": "m"}),
         ("UPDATE", 1, '{"id":"d1","body":"local"}')),
        ("update", conflict(row={"id": "d1", "body": "s"}), KeepMerged({"id": "d1"}),
         ("UPDATE", 1, '{"id":"d1","body":"local"}')),
        # Not a resolver result at all.
        ("update", conflict(row={"id": "d1", "body": "s"}), "keep it",
         ("UPDATE", 1, '{"id":"d1","body":"local"}')),
    ],
)
async def test_invalid_resolution_restores_the_bundle(
    harness: Harness, local: str, reply: httpx.Response, result: object,
    dirty: tuple[Any, ...],
) -> None:
    await harness.synced("docs", "d1", "'d1', 'base'", 1)
    if local == "delete":
        await harness.sql("DELETE FROM docs WHERE id = 'd1'")
    else:
        await harness.sql("UPDATE docs SET body = 'local' WHERE id = 'd1'")
    await harness.sql("INSERT INTO docs VALUES ('d2', 'sibling')")
    harness.server.push_script("commit", reply)
    with pytest.raises(InvalidConflictResolutionError) as caught:
        await push_pending(await harness.runtime(), resolver=Recording(result))
    assert caught.value.result is result
    rows = {k: (op, base, p) for _, k, op, base, p in await harness.dirty()}
    assert rows == {
        '{"id":"d1"}': dirty, '{"id":"d2"}': ("INSERT", 0, '{"id":"d2","body":"sibling"}'),
    }
    assert await harness.outbox_state() == ("none", 0, 0, 0)
    assert await harness.row_state("docs", '{"id":"d1"}') == (1, 0)  # untouched
    assert await harness.next_bundle_id() == 1
    # Replayable: a working resolver later pushes the same intents.
    assert (await push_pending(await harness.runtime())).outcome is PushOutcome.COMMITTED


async def test_retry_budget_is_two(harness: Harness) -> None:
    await _edited_doc(harness)
    harness.server.push_script(
        "commit", *[conflict(row={"id": "d1", "body": "server"})] * 3
    )
    with pytest.raises(PushConflictRetryExhaustedError) as caught:
        await push_pending(await harness.runtime(), resolver=ClientWinsResolver())
    assert (caught.value.retry_count, caught.value.remaining_dirty_count) == (2, 1)
    assert [c["source_bundle_id"] for c in harness.server.bodies("create")] == [1, 1, 1]
    assert [(op, base) for _, _, op, base, _ in await harness.dirty()] == [("UPDATE", 2)]
    assert await harness.outbox_state() == ("none", 0, 0, 0)
    assert await harness.next_bundle_id() == 1
    assert await harness.checkpoint() == 0


async def test_conflict_without_details_keeps_everything(harness: Harness) -> None:
    await _edited_doc(harness)
    harness.server.push_script("commit", httpx.Response(
        409, json={"error": "push_conflict", "message": "no details"}
    ))
    resolver = Recording(KeepLocal())
    with pytest.raises(PushConflictError):
        await push_pending(await harness.runtime(), resolver=resolver)
    assert resolver.contexts == []
    assert (await harness.outbox_state())[0] == "prepared"
    assert await harness.dirty() == []


async def test_conflict_on_unknown_key_keeps_the_outbox(harness: Harness) -> None:
    await _edited_doc(harness)
    harness.server.push_script("commit", conflict(key="not-ours"))
    with pytest.raises(PushConflictError):
        await push_pending(await harness.runtime())
    assert (await harness.outbox_state())[0] == "prepared"


async def test_keep_local_delete_against_live_row(harness: Harness) -> None:
    await harness.synced("docs", "d1", "'d1', 'base'", 1)
    await harness.sql("DELETE FROM docs WHERE id = 'd1'")
    stale = conflict(op="DELETE", row={"id": "d1", "body": "s"})
    harness.server.push_script("commit", stale, stale, stale)
    with pytest.raises(PushConflictRetryExhaustedError):
        await push_pending(await harness.runtime(), resolver=ClientWinsResolver())
    assert await harness.rows("SELECT * FROM docs") == []
    assert await harness.row_state("docs", '{"id":"d1"}') == (2, 0)
    assert [(op, base, p) for _, _, op, base, p in await harness.dirty()] == [("DELETE", 2, None)]


async def test_keep_local_insert_over_tombstone(harness: Harness) -> None:
    await harness.sql("INSERT INTO docs VALUES ('d1', 'fresh')")
    harness.server.push_script("commit", conflict(op="INSERT", base=0, deleted=True))
    await push_pending(await harness.runtime(), resolver=ClientWinsResolver())
    second = harness.server.bodies("chunk")[-1]["rows"][0]
    assert (second["op"], second["base_row_version"]) == ("INSERT", 2)


async def test_blob_and_uuid_columns_survive_keep_local(harness: Harness) -> None:
    """Local hex is converted to the wire form before applying (Go corrupts it, §12.25)."""
    file_id = bytes.fromhex(FILE_ID)
    async with harness.engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE _sync_apply_state SET apply_mode = 1")
        await conn.exec_driver_sql("INSERT INTO files VALUES (?, 'f', x'00')", (file_id,))
        await conn.exec_driver_sql(
            "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version)"
            " VALUES ('business', 'files', ?, 1)", (f'{{"id":"{FILE_ID}"}}',),
        )
        await conn.exec_driver_sql("UPDATE _sync_apply_state SET apply_mode = 0")
    await harness.sql("UPDATE files SET data = x'deadbeef'")
    server_row = {"id": FILE_UUID, "name": "server", "data": "AAE="}
    harness.server.push_script("commit", conflict("files", FILE_UUID, row=server_row))
    resolver = Recording(KeepLocal())
    await push_pending(await harness.runtime(), resolver=resolver)

    (ctx,) = resolver.contexts
    assert ctx.key == {"id": FILE_UUID}
    assert ctx.local_payload == {"id": FILE_UUID, "name": "f", "data": "3q2+7w=="}
    assert ctx.server_row == server_row
    assert await harness.rows("SELECT id, name, data FROM files") == [
        (file_id, "f", bytes.fromhex("deadbeef"))
    ]
    second = harness.server.bodies("chunk")[-1]["rows"][0]
    assert second["payload"] == {"id": FILE_UUID, "name": "f", "data": "3q2+7w=="}


async def test_blob_keep_merged_uses_wire_encoding(harness: Harness) -> None:
    file_id = bytes.fromhex(FILE_ID)
    await harness.sql("INSERT INTO files VALUES (?, 'f', x'01')", (file_id,))
    server_row = {"id": FILE_UUID, "name": "server", "data": "Ag=="}
    harness.server.push_script("commit", conflict("files", FILE_UUID, op="INSERT", base=0,
                                                  row=server_row))
    merged = KeepMerged({"id": FILE_UUID, "name": "merged", "data": "AwQ="})
    await push_pending(await harness.runtime(), resolver=Recording(merged))
    assert await harness.rows("SELECT name, data FROM files") == [("merged", b"\x03\x04")]
    second = harness.server.bodies("chunk")[-1]["rows"][0]
    assert (second["op"], second["base_row_version"]) == ("UPDATE", 2)
