"""Binary keys and payloads, and scalar type fidelity, checked on the server's columns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from examples.mobile_flow.context import ScenarioContext, scenario

_FILES = (
    ("document1.txt", b"This is the content of document 1"),
    ("image1.jpg", bytes([0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0x4A, 0x46, 0x49, 0x46])),
    ("config.json", b'{"setting1": "value1", "setting2": 42}'),
    ("binary.dat", bytes(range(10))),
)
_REVIEWS = (
    "Excellent document with clear structure",
    "Good image quality, needs better compression",
    "Configuration looks correct, all settings valid",
    "Binary data appears to be properly formatted",
    "Additional review for the first document",
    "Second opinion on the image file",
)


@scenario("files-sync", "Files Sync", "BLOB (16-byte UUID) keys, BLOB FKs and binary data")
async def files_sync(ctx: ScenarioContext) -> None:
    user = ctx.user("user-files")
    phone = await ctx.device("phone")
    await phone.sign_in(user)
    ctx.step("4 files with binary data and 6 reviews, keys are raw 16-byte UUIDs")
    file_ids = [uuid.uuid4() for _ in _FILES]
    for key, (name, data) in zip(file_ids, _FILES, strict=True):
        await phone.execute(
            "INSERT INTO files (id, name, data) VALUES (:id, :n, :d)",
            {"id": key.bytes, "n": name, "d": data},
        )
    for i, review in enumerate(_REVIEWS):
        await phone.execute(
            "INSERT INTO file_reviews (id, file_id, review) VALUES (:id, :f, :r)",
            {"id": uuid.uuid4().bytes, "f": file_ids[i % len(file_ids)].bytes, "r": review},
        )
    await phone.push_pending()
    ctx.step("delete the first file: its 2 reviews cascade locally and sync as deletes")
    await phone.execute("DELETE FROM files WHERE id = :id", {"id": file_ids[0].bytes})
    await phone.push_pending()
    ctx.equal(await phone.pending_count(), 0, "pending after the pushes")

    v = ctx.verifier
    ctx.equal(await v.business_rows(user, "files"), 3, "server files")
    ctx.equal(await v.business_rows(user, "file_reviews"), 4, "server reviews")
    ctx.equal(await v.orphaned_reviews(user), 0, "orphaned reviews")
    for key, (_name, data) in list(zip(file_ids, _FILES, strict=True))[1:]:
        stored = await v.pool.fetchval(
            "SELECT data FROM business.files WHERE _sync_scope_id = $1 AND id = $2", user, key
        )
        ctx.equal(bytes(stored), data, f"server bytes of file {key}")


@scenario("typed-rows", "Typed Rows", "Nullable, numeric, timestamp and BLOB column fidelity")
async def typed_rows(ctx: ScenarioContext) -> None:
    # go-oversync uses the ids 'typed-null'/'typed-rich', which its own server's UUID key
    # column cannot store; fixed UUIDs keep the scenario's intent.
    null_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "mobile-flow/typed-null"))
    rich_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "mobile-flow/typed-rich"))
    user = ctx.user("user-typed-rows")
    phone = await ctx.device("phone")
    await phone.sign_in(user)
    ctx.step("one row of NULLs, one with text/int/flag/real/blob/timestamp values")
    await phone.execute(
        "INSERT INTO typed_rows (id, name, note, count_value, enabled_flag, rating, data, "
        "created_at) VALUES (:id, 'Typed Null', NULL, NULL, 0, NULL, NULL, NULL)",
        {"id": null_id},
    )
    await phone.execute(
        "INSERT INTO typed_rows (id, name, note, count_value, enabled_flag, rating, data, "
        "created_at) VALUES (:id, 'Typed Rich', 'second-device', 42, 1, 1.25, :d, "
        "'2026-03-24T18:42:11Z')",
        {"id": rich_id, "d": bytes.fromhex("cafebabe")},
    )
    await phone.push_pending()

    v = ctx.verifier
    ctx.equal(await v.business_rows(user, "typed_rows"), 2, "server typed rows")
    null_row = await v.typed_row(user, null_id)
    ctx.equal(
        null_row,
        {
            "name": "Typed Null",
            "note": None,
            "count_value": None,
            "enabled_flag": 0,
            "rating": None,
            "data_hex": None,
            "created_at": None,
        },
        "NULL row on the server",
    )
    rich = await v.typed_row(user, rich_id)
    ctx.check(rich is not None, "rich row exists on the server")
    assert rich is not None
    rating = rich.pop("rating")
    ctx.check(rating is not None and abs(rating - 1.25) < 1e-6, f"rating {rating!r}")
    ctx.equal(
        rich,
        {
            "name": "Typed Rich",
            "note": "second-device",
            "count_value": 42,
            "enabled_flag": 1,
            "data_hex": "cafebabe",
            "created_at": datetime(2026, 3, 24, 18, 42, 11, tzinfo=UTC),
        },
        "rich row on the server",
    )
