"""Several devices of one user: convergence, delete propagation, FK-graph atomicity."""

from __future__ import annotations

import uuid

from examples.mobile_flow.context import ScenarioContext, scenario
from examples.mobile_flow.device import Device
from oversync_sa.client.errors import DirtyStateRejectedError


async def _push_pull(device: Device) -> None:
    await device.push_pending()
    await device.pull_to_stable()


@scenario(
    "multi-device-sync",
    "Multi-Device Sync",
    "Two devices of one user: delete convergence and stable bundle checkpoints",
)
async def multi_device_sync(ctx: ScenarioContext) -> None:
    user = ctx.user("userA")
    d1, d2 = await ctx.device("device-1"), await ctx.device("device-2")
    for device in (d1, d2):
        await device.sign_in(user)
    for device in (d1, d2):
        await device.rebuild()
    ctx.step("each device creates a person, pushes and pulls")
    person_a = await d1.create_user("Person A (Device 1)", "persona@example.com")
    person_b = await d2.create_user("Person B (Device 2)", "personb@example.com")
    await _push_pull(d1)
    await _push_pull(d2)

    ctx.step("device 1 deletes person A; it must stay deleted after its own sync")
    await d1.delete_user(person_a)
    ctx.check(not await d1.has_user(person_a), "person A deleted locally")
    await _push_pull(d1)
    ctx.check(not await d1.has_user(person_a), "deleted record was restored after sync")
    await d2.pull_to_stable()
    for device in (d1, d2):
        ctx.equal(await device.user_ids(), {person_b}, f"{device.name} users")
    ctx.equal(await ctx.verifier.business_rows(user, "users"), 1, "server users")


@scenario(
    "multi-device-complex",
    "Multi-Device Complex",
    "Long mixed adds/updates/deletes/re-adds across two devices, then converge",
)
async def multi_device_complex(ctx: ScenarioContext) -> None:
    user = ctx.user("user-complex")
    d1, d2 = await ctx.device("device-1"), await ctx.device("device-2")
    for device in (d1, d2):
        await device.sign_in(user)
    for device in (d1, d2):
        await device.rebuild()
    a1, a2, a3 = (str(uuid.uuid4()) for _ in range(3))
    ctx.step("D1 adds A1-A3, D2 adds B1-B2")
    for key, name in ((a1, "A1"), (a2, "A2"), (a3, "A3")):
        await d1.create_user(name, f"{name.lower()}@example.com", user_id=key)
    await _push_pull(d1)
    b1 = await d2.create_user("B1", "b1@example.com")
    b2 = await d2.create_user("B2", "b2@example.com")
    await _push_pull(d2)
    ctx.step("D1 updates A2, D2 deletes A1, D1 adds B3, D2 updates B2")
    await d1.update_user(a2, "A2-upd", "a2u@example.com")
    await _push_pull(d1)
    await d2.delete_user(a1)
    await _push_pull(d2)
    b3 = await d1.create_user("B3", "b3@example.com")
    await _push_pull(d1)
    await d2.update_user(b2, "B2-upd", "b2u@example.com")
    await _push_pull(d2)
    ctx.step("D1 deletes A3, re-adds it with the same id (INSERT over a tombstone), updates it")
    await d1.delete_user(a3)
    await _push_pull(d1)
    await d1.create_user("A3-re", "a3re@example.com", user_id=a3)
    await _push_pull(d1)
    await d1.update_user(a3, "A3-re-upd", "a3reu@example.com")
    await _push_pull(d1)
    await d1.pull_to_stable()
    await d2.pull_to_stable()

    expected = {a2, a3, b1, b2, b3}
    names = {a2: "A2-upd", a3: "A3-re-upd", b2: "B2-upd"}
    for device in (d1, d2):
        ctx.equal(await device.user_ids(), expected, f"{device.name} users")
        for key, name in names.items():
            actual = await device.scalar("SELECT name FROM users WHERE id = :id", {"id": key})
            ctx.equal(actual, name, f"{device.name} name of {key}")
    ctx.equal(await ctx.verifier.business_ids(user, "users"), expected, "server users")


async def _graph_counts(device: Device) -> tuple[int, ...]:
    return tuple(
        [await device.count(t) for t in ("users", "posts", "categories", "teams", "team_members")]
    )


@scenario(
    "bundle-fk-atomicity",
    "Bundle FK Atomicity",
    "Bundle checkpoints, dirty-pull rejection, self-ref/cycle/cascade FK graphs",
)
async def bundle_fk_atomicity(ctx: ScenarioContext) -> None:
    user = ctx.user("bundle-fk-user")
    d1, d2, d3 = [await ctx.device(f"device-{i}") for i in (1, 2, 3)]
    for device in (d1, d2, d3):
        await device.sign_in(user, background=False)
    ids = {k: str(uuid.uuid4()) for k in ("user", "post", "root", "child", "team", "member")}

    ctx.step("device 1 seeds user, post, category tree and a team<->captain cycle")
    await d1.create_user("Ada", "ada@example.com", user_id=ids["user"])
    await d1.create_post("Hello", "Seed post", ids["user"], post_id=ids["post"])
    await d1.execute(
        "INSERT INTO categories (id, name, parent_id) VALUES (:id, 'Root', NULL)",
        {"id": ids["root"]},
    )
    await d1.execute(
        "INSERT INTO categories (id, name, parent_id) VALUES (:id, 'Child', :p)",
        {"id": ids["child"], "p": ids["root"]},
    )
    async with d1.transaction(defer_fks=True) as conn:
        await conn.exec_driver_sql(
            "INSERT INTO teams (id, name, captain_member_id) VALUES (?, 'Alpha Team', ?)",
            (ids["team"], ids["member"]),
        )
        await conn.exec_driver_sql(
            "INSERT INTO team_members (id, name, team_id) VALUES (?, 'Captain Ada', ?)",
            (ids["member"], ids["team"]),
        )
    ctx.check(await d1.pending_count() >= 6, "at least 6 pending rows before the seed push")
    await d1.push_pending()
    ctx.equal(await d1.pending_count(), 0, "pending after the seed push")
    seed_seq = await d1.last_seq()
    ctx.check(seed_seq > 0, "seed push advanced the checkpoint")

    ctx.step("devices 2 and 3 hydrate the whole graph")
    for device in (d2, d3):
        await device.rebuild()
        ctx.equal(await _graph_counts(device), (1, 1, 2, 1, 1), f"{device.name} graph counts")

    ctx.step("a pull with local dirty rows is rejected and keeps the checkpoint")
    before = await d2.last_seq()
    await d2.execute(
        "UPDATE categories SET name = 'Child Draft' WHERE id = :id", {"id": ids["child"]}
    )
    try:
        await d2.client.pull_to_stable()
    except DirtyStateRejectedError:
        pass
    else:
        ctx.check(False, "pull with dirty rows must raise DirtyStateRejectedError")
    ctx.equal(await d2.last_seq(), before, "device 2 checkpoint after the rejected pull")

    ctx.step("device 1 deletes the graph in one transaction (cascades included)")
    async with d1.transaction(defer_fks=True) as conn:
        for table, key in (
            ("categories", "root"),
            ("teams", "team"),
            ("posts", "post"),
            ("users", "user"),
        ):
            await conn.exec_driver_sql(f"DELETE FROM {table} WHERE id = ?", (ids[key],))
    await d1.push_pending()
    delete_seq = await d1.last_seq()
    ctx.check(delete_seq > seed_seq, f"delete bundle {delete_seq} after seed {seed_seq}")
    applied, checkpoint = await d3.pull_to_stable()
    ctx.equal(applied, 1, "bundles applied by device 3 for the cascade delete")
    ctx.equal(checkpoint, delete_seq, "device 3 checkpoint")
    ctx.equal(await _graph_counts(d3), (0, 0, 0, 0, 0), "device 3 graph counts")

    v = ctx.verifier
    for table in ("users", "posts", "categories", "teams", "team_members"):
        ctx.equal(await v.live_rows(user, table), 0, f"server live {table}")
    ctx.check(await v.bundles(user) >= 2, "at least 2 committed bundles")
