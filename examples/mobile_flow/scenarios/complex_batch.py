"""``complex-multi-batch``: a large FK-heavy offline dirty set, chunked pushes with crashes at
both restart boundaries, chunked snapshots and a stale follower recovering from pruned history."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from examples.mobile_flow.context import ScenarioContext, scenario
from examples.mobile_flow.device import Device
from examples.mobile_flow.schema import client_config

PRE_COMMIT_CRASH: Final = "simulated crash after chunk upload before push commit"
PRE_REPLAY_CRASH: Final = "simulated crash after committed bundle fetch before local replay"
MAX_ROUNDS: Final = 15


@dataclass
class Expected:
    """The business state every device must end with, keyed like the local tables."""

    users: dict[str, tuple[str, str]] = field(default_factory=dict)
    posts: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    reviews: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class _Batch:
    user_ids: list[str]
    post_ids: list[str]


async def _create_groups(
    device: Device, expected: Expected, *, users: int, posts_per_user: int, laptop: bool
) -> _Batch:
    """Users and their posts in one deferred-FK transaction, each user's posts *first*."""
    await device.stop_sync()
    device.client.pause_uploads()
    device.client.pause_downloads()
    batch = _Batch([], [])
    base = 100 if laptop else 0
    async with device.transaction(defer_fks=True) as conn:
        for group in range(1, users + 1):
            user_id = str(uuid.uuid4())
            for _ in range(posts_per_user):
                number = base + len(batch.post_ids) + 1
                if laptop:
                    title = f"New FK Test Post {number} by New User {group}"
                    content = f"Content for new post {number}"
                else:
                    title = f"FK Test Post {number} by User {group}"
                    content = f"Content for post {number} by user {group}"
                post_id = await device.create_post(title, content, user_id, conn=conn)
                batch.post_ids.append(post_id)
                expected.posts[post_id] = (user_id, title, content)
            name, email = (
                (f"New User {group}", f"newuser{group}@example.com")
                if laptop
                else (f"User {group}", f"user{group}@example.com")
            )
            await device.create_user(name, email, user_id=user_id, conn=conn)
            batch.user_ids.append(user_id)
            expected.users[user_id] = (name, email)
    return batch


async def _create_blobs(device: Device, expected: Expected, label: str, groups: int) -> None:
    for group in range(groups):
        for suffix in ("A", "B"):
            file_id, data = uuid.uuid4().bytes, uuid.uuid4().bytes
            name = f"Blob File {suffix} {label}-{group}"
            await device.execute(
                "INSERT INTO files (id, name, data) VALUES (:i, :n, :d)",
                {"i": file_id, "n": name, "d": data},
            )
            expected.files[file_id.hex()] = (name, data.hex())
            review_id, text = uuid.uuid4().bytes, f"Blob Review {suffix} {label}-{group}"
            await device.execute(
                "INSERT INTO file_reviews (id, file_id, review) VALUES (:i, :f, :r)",
                {"i": review_id, "f": file_id, "r": text},
            )
            expected.reviews[review_id.hex()] = (file_id.hex(), text)


async def _set_ordinal(conn: AsyncConnection, table: str, key: str, ordinal: int) -> int:
    stamp = f"2000-01-01T00:00:{ordinal // 1000:02d}.{ordinal % 1000:03d}Z"
    result = await conn.exec_driver_sql(
        "UPDATE _sync_dirty_rows SET dirty_ordinal = ?, updated_at = ? "
        "WHERE table_name = ? AND key_json = json_object('id', ?)",
        (ordinal, stamp, table, key),
    )
    return int(result.rowcount)


async def _interleave(device: Device, batch: _Batch, posts_per_user: int) -> int:
    """Rewrite the dirty queue so half of each user's posts come *before* the user.

    The client must still push parents first; returns how many dirty rows were reordered.
    """
    half = max(posts_per_user // 2, 1)
    ordinal = reordered = 0
    async with device.transaction() as conn:
        for group, user_id in enumerate(batch.user_ids):
            posts = batch.post_ids[group * posts_per_user : (group + 1) * posts_per_user]
            for table, key in (
                [("posts", p) for p in posts[:half]]
                + [("users", user_id)]
                + [("posts", p) for p in posts[half:]]
            ):
                changed = await _set_ordinal(conn, table, key, ordinal)
                reordered += changed
                ordinal += changed
    return reordered


async def _mixed_edits(
    device: Device, expected: Expected, phone: _Batch, laptop: _Batch, posts_per_user: int
) -> None:
    """Updates (some rows twice, which must coalesce), deletes, and whole users removed."""

    async def user(key: str, name: str, email: str) -> None:
        await device.update_user(key, name, email)
        expected.users[key] = (name, email)

    async def post(key: str, title: str, content: str) -> None:
        await device.update_post(key, title, content)
        expected.posts[key] = (expected.posts[key][0], title, content)

    async def drop_post(key: str) -> None:
        await device.delete_post(key)
        expected.posts.pop(key, None)

    for i, key in enumerate(phone.user_ids[:2], start=1):
        await user(key, f"User {i} Laptop Rev 1", f"user{i}+laptop-rev1@example.com")
    await user(phone.user_ids[0], "User 1 Laptop Rev 2", "user1+laptop-rev2@example.com")
    for i, key in enumerate(laptop.user_ids[:3], start=1):
        await user(key, f"New User {i} Laptop Rev 1", f"newuser{i}+laptop-rev1@example.com")
    await user(laptop.user_ids[1], "New User 2 Laptop Rev 2", "newuser2+laptop-rev2@example.com")
    for i, key in enumerate(phone.post_ids[:8], start=1):
        await post(key, f"Original Post {i} Laptop Rev 1", f"Original post {i} edited offline")
    await post(phone.post_ids[0], "Original Post 1 Laptop Rev 2", "Original post 1 edited twice")
    for i, key in enumerate(laptop.post_ids[:20], start=1):
        await post(key, f"New Post {i} Laptop Rev 1", f"New post {i} edited offline")
    await post(laptop.post_ids[1], "New Post 2 Laptop Rev 2", "New post 2 edited twice")
    for key in phone.post_ids[:5]:
        await drop_post(key)
    start = min(100, len(laptop.post_ids) // 4)  # Go: posts 100..107 of 400
    for key in laptop.post_ids[start : start + 8]:
        await drop_post(key)
    for group in (len(laptop.user_ids) - 1, len(laptop.user_ids) - 2):
        for key in laptop.post_ids[group * posts_per_user : (group + 1) * posts_per_user]:
            await drop_post(key)
        await device.delete_user(laptop.user_ids[group])
        expected.users.pop(laptop.user_ids[group])


async def _push_until_clean(ctx: ScenarioContext, device: Device) -> int:
    device.client.pause_downloads()
    rounds = 0
    while True:
        outbox, _stage, dirty = await device.push_recovery_counts()
        if dirty == 0 and outbox == 0:
            break
        rounds += 1
        ctx.check(rounds <= MAX_ROUNDS, f"{device.name}: still {dirty} dirty after {MAX_ROUNDS}")
        await device.push_pending()
    device.client.resume_downloads()
    return rounds


async def _assert_state(ctx: ScenarioContext, device: Device, expected: Expected) -> None:
    users = {r[0]: (r[1], r[2]) for r in await device.rows("SELECT id, name, email FROM users")}
    posts = {
        r[0]: (r[1], r[2], r[3])
        for r in await device.rows("SELECT id, author_id, title, content FROM posts")
    }
    files = {
        r[0]: (r[1], r[2])
        for r in await device.rows("SELECT lower(hex(id)), name, lower(hex(data)) FROM files")
    }
    reviews = {
        r[0]: (r[1], r[2])
        for r in await device.rows(
            "SELECT lower(hex(id)), lower(hex(file_id)), review FROM file_reviews"
        )
    }
    for what, actual, wanted in (
        ("users", users, expected.users),
        ("posts", posts, expected.posts),
        ("files", files, expected.files),
        ("reviews", reviews, expected.reviews),
    ):
        if actual != wanted:
            missing = len(wanted.keys() - actual.keys())
            extra = len(actual.keys() - wanted.keys())
            wrong = sum(1 for k in wanted.keys() & actual.keys() if wanted[k] != actual[k])
            ctx.check(
                False,
                f"{device.name} {what}: {len(actual)} rows, expected "
                f"{len(wanted)} ({missing} missing, {extra} extra, {wrong} differ)",
            )
    ctx.check(
        all(author in users for author, _t, _c in posts.values()),
        f"{device.name}: a post references a missing user",
    )
    ctx.check(
        all(file in files for file, _r in reviews.values()),
        f"{device.name}: a review references a missing file",
    )


def _crash(message: str) -> Callable[[AsyncConnection | None], Awaitable[None]]:
    async def hook(_conn: AsyncConnection | None) -> None:
        raise RuntimeError(message)

    return hook


def _caused_by(exc: BaseException, message: str) -> bool:
    current: BaseException | None = exc
    while current is not None:
        if message in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


async def _push_expecting_crash(ctx: ScenarioContext, device: Device, message: str) -> None:
    try:
        await device.client.push_pending()
    except Exception as exc:
        ctx.check(_caused_by(exc, message), f"expected '{message}', got {exc!r}")
    else:
        ctx.check(False, f"expected '{message}', the push succeeded")


@scenario(
    "complex-multi-batch",
    "Complex Multi-Batch",
    "FK-heavy multi-chunk push with crash/restart recovery, chunked snapshots, pruning",
)
async def complex_multi_batch(ctx: ScenarioContext) -> None:
    sizes = ctx.sizes
    per_user = sizes.complex_posts_per_user
    user = ctx.user("user-complex-multi-batch")
    config = client_config(
        upload_limit=sizes.complex_upload_limit,
        download_limit=sizes.complex_download_limit,
        snapshot_chunk_rows=sizes.complex_snapshot_rows,
    )
    expected = Expected()
    phone = await ctx.device("phone", config=config)
    await phone.sign_in(user)

    ctx.step(
        f"phone: {sizes.complex_phone_users} users x {per_user} posts, posts before "
        "their user, plus files/reviews"
    )
    phone_batch = await _create_groups(
        phone, expected, users=sizes.complex_phone_users, posts_per_user=per_user, laptop=False
    )
    await _create_blobs(phone, expected, "phone-seed", sizes.complex_phone_users)
    reordered = await _interleave(phone, phone_batch, per_user)
    ctx.equal(
        reordered,
        len(phone_batch.user_ids) + len(phone_batch.post_ids),
        "dirty rows found by json_object('id', ?) key lookup",
    )
    phone.client.resume_uploads()
    phone.client.push_stats.reset()
    await _push_until_clean(ctx, phone)
    ctx.check(phone.client.push_stats.chunks_uploaded > 1, "phone push used several chunks")
    await phone.pull_to_stable()

    ctx.step("laptop signs in and hydrates from a chunked snapshot")
    laptop = await ctx.device("laptop", config=config)
    await laptop.sign_in(user)
    chunks_before = laptop.network.traffic.requests["snapshot_chunk"]
    await laptop.rebuild()
    chunks = laptop.network.traffic.requests["snapshot_chunk"] - chunks_before
    ctx.check(chunks > 1, f"laptop snapshot fetched {chunks} chunk(s), expected several")
    await _assert_state(ctx, laptop, expected)

    ctx.step(
        f"laptop: {sizes.complex_laptop_users} more users x {per_user} posts, files, "
        "then mixed updates/deletes"
    )
    laptop_batch = await _create_groups(
        laptop, expected, users=sizes.complex_laptop_users, posts_per_user=per_user, laptop=True
    )
    await _create_blobs(laptop, expected, "laptop-seed", sizes.complex_laptop_users)
    await _mixed_edits(laptop, expected, phone_batch, laptop_batch, per_user)
    await _interleave(laptop, laptop_batch, per_user)
    ctx.check(await laptop.pending_count() > 0, "laptop has pending rows")
    laptop.client.resume_uploads()

    ctx.step("crash before commit: the outbox survives, restart re-uploads from zero")
    laptop.client.push_stats.reset()
    laptop.client.runtime.hooks.before_push_commit = _crash(PRE_COMMIT_CRASH)
    await _push_expecting_crash(ctx, laptop, PRE_COMMIT_CRASH)
    stats = laptop.client.push_stats
    ctx.check(stats.chunks_uploaded > 1, f"chunks before the crash: {stats.chunks_uploaded}")
    ctx.equal(stats.committed_bundle_chunks_read, 0, "committed chunks read before commit")
    outbox, stage, dirty = await laptop.push_recovery_counts()
    ctx.check(
        outbox > 0 and stage == 0 and dirty == 0,
        f"after pre-commit crash: outbox={outbox} stage={stage} dirty={dirty}",
    )
    laptop = await ctx.restart(laptop)

    ctx.step("crash after commit, before local replay: restart resumes from the server")
    laptop.client.runtime.hooks.before_push_replay = _crash(PRE_REPLAY_CRASH)
    await _push_expecting_crash(ctx, laptop, PRE_REPLAY_CRASH)
    stats = laptop.client.push_stats
    ctx.equal(stats.sessions_created, 1, "push sessions after the first restart")
    ctx.check(stats.chunks_uploaded > 1, f"re-uploaded chunks: {stats.chunks_uploaded}")
    ctx.check(
        stats.committed_bundle_chunks_read > 1,
        f"committed chunks read: {stats.committed_bundle_chunks_read}",
    )
    outbox, stage, dirty = await laptop.push_recovery_counts()
    ctx.check(
        outbox > 0 and stage > 0 and dirty == 0,
        f"after pre-replay crash: outbox={outbox} stage={stage} dirty={dirty}",
    )
    laptop = await ctx.restart(laptop)
    await _push_until_clean(ctx, laptop)
    ctx.equal(await laptop.push_recovery_counts(), (0, 0, 0), "laptop outbox/stage/dirty")
    laptop = await ctx.restart(laptop)
    ctx.check(await laptop.last_seq() > 0, "durable checkpoint after the post-commit restart")
    await laptop.pull_to_stable()
    stable = await laptop.last_seq()

    ctx.step("server prunes history up to the stable bundle; the stale phone must rebuild")
    v = ctx.verifier
    await v.set_retained_floor(user, stable)
    ctx.equal(await v.retained_floor(user), stable, "retained floor")
    bundles, rows = await v.history_at_or_below_floor(user)
    ctx.check(bundles > 0 and rows > 0, "history exists below the floor before pruning")
    sources = await v.source_states(user)
    await v.delete_history_at_or_below_floor(user)
    ctx.equal(await v.history_at_or_below_floor(user), (0, 0), "history below the floor")
    ctx.equal(await v.source_states(user), sources, "source_state rows survive pruning")
    for table, rows_expected in (
        ("users", expected.users),
        ("posts", expected.posts),
        ("files", expected.files),
        ("file_reviews", expected.reviews),
    ):
        ctx.equal(await v.live_rows(user, table), len(rows_expected), f"server live {table}")

    chunks_before = phone.network.traffic.requests["snapshot_chunk"]
    await phone.pull_to_stable()
    chunks = phone.network.traffic.requests["snapshot_chunk"] - chunks_before
    ctx.check(chunks > 1, f"phone prune fallback fetched {chunks} snapshot chunk(s)")
    ctx.equal(await phone.last_seq(), stable, "phone checkpoint")
    for device in (laptop, phone):
        await _assert_state(ctx, device, expected)
    ctx.note(
        f"{len(expected.users)} users, {len(expected.posts)} posts, "
        f"{len(expected.files)} files at stable bundle {stable}"
    )
