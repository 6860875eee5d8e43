"""One user's app lifecycle: first install, daily use, reinstall, a new phone, going offline,
and switching accounts on one phone."""

from __future__ import annotations

from examples.mobile_flow.context import ScenarioContext, ScenarioFailure, scenario
from examples.mobile_flow.device import OFFLINE_BANNER
from oversync_sa.client.errors import SourceRecoveryRequiredError
from oversync_sa.client.results import AttachOutcome, DetachOutcome


@scenario("fresh-install", "Fresh Install", "Clean app, offline usage, first sync")
async def fresh_install(ctx: ScenarioContext) -> None:
    records, updates, deletes = 5, 3, 1
    user = ctx.user("user-fresh-install")
    phone = await ctx.device("phone")
    ctx.check(phone.ui.banner == OFFLINE_BANNER, "a fresh install starts signed out")

    ctx.step("offline (guest) edits: 5 users with a post each, 3 updates, 1 delete")
    phone.network.online = False
    ids = []
    for i in range(1, records + 1):
        uid = await phone.create_user(f"User {i}", f"user{i}@example.com")
        await phone.create_post(f"Post by User {i}", f"Content from user {i}, offline", uid)
        ids.append(uid)
    for i in range(updates):
        await phone.update_user(ids[i], f"Updated User {i + 1}", f"updated.user{i + 1}@example.com")
    for uid in ids[len(ids) - deletes :]:
        await phone.execute("DELETE FROM posts WHERE author_id = :a", {"a": uid})
        await phone.delete_user(uid)
    guest_pending = await phone.pending_count()
    ctx.check(guest_pending >= 8, f"guest edits are captured while signed out ({guest_pending})")

    ctx.step("back online, sign in: pending rows on an empty account seed it")
    phone.network.online = True
    attach = await phone.sign_in(user)
    await phone.stop_sync()
    ctx.equal(attach.outcome, AttachOutcome.SEEDED_FROM_LOCAL, "attach outcome")
    await phone.push_pending()
    ctx.equal(await phone.pending_count(), 0, "pending badge after the first push")

    v = ctx.verifier
    expected = records - deletes
    users, posts = await v.live_rows(user, "users"), await v.live_rows(user, "posts")
    ctx.check(
        users >= expected and posts >= expected,
        f"server has {users} users / {posts} posts, expected >= {expected} each",
    )
    ctx.check(await v.bundles(user) > 0, "server recorded at least one bundle")
    names = {r[0] for r in await phone.rows("SELECT name FROM users")}
    ctx.check("Updated User 1" in names, "offline updates survived the seed")


@scenario("normal-usage", "Normal Usage", "Established user, regular sync operations")
async def normal_usage(ctx: ScenarioContext) -> None:
    user = ctx.user("user-normal-usage")
    phone = await ctx.device("phone")
    await phone.sign_in(user)
    await phone.stop_sync()
    ctx.step("create 10 users, update 8, delete 2, push once")
    ids = [
        await phone.create_user(f"Normal User {i}", f"normal.user{i}@example.com")
        for i in range(1, 11)
    ]
    for i, uid in enumerate(ids[:8], start=1):
        await phone.update_user(uid, f"Updated Normal User {i}", f"updated.normal{i}@example.com")
    for uid in ids[-2:]:
        await phone.delete_user(uid)
    await phone.push_pending()
    ctx.equal(await phone.pending_count(), 0, "pending after push")
    ctx.equal(await ctx.verifier.live_rows(user, "users"), 8, "server live users")
    ctx.equal(await ctx.verifier.business_ids(user, "users"), set(ids[:8]), "server user ids")


@scenario("reinstall", "Reinstall/Recovery", "Same user/device, clean DB, data recovery")
async def reinstall(ctx: ScenarioContext) -> None:
    user = ctx.user("user-reinstall")
    phone = await ctx.device("phone")
    await phone.sign_in(user)
    ids = [
        await phone.create_user(f"Reinstall User {i}", f"reinstall-user-{i}@example.com")
        for i in range(1, 4)
    ]
    ctx.step("push 3 users, then uninstall the app")
    await phone.push_pending()
    await phone.pull_to_stable()
    await phone.close()

    ctx.step("fresh install on the same phone: sign in and rebuild from the server")
    again = await ctx.device("phone-reinstalled")
    attach = await again.sign_in(user)
    ctx.equal(attach.outcome, AttachOutcome.USED_REMOTE_STATE, "attach outcome after reinstall")
    await again.rebuild()
    ctx.equal(await again.user_ids(), set(ids), "restored users")
    ctx.equal(await ctx.verifier.live_rows(user, "users"), 3, "server live users")


@scenario("device-replacement", "Device Replacement", "Same user, new device, data migration")
async def device_replacement(ctx: ScenarioContext) -> None:
    user = ctx.user("user-device-replacement")
    old = await ctx.device("phone")
    await old.sign_in(user)
    original = await old.create_user("Original Device User", "original-device@example.com")
    await old.push_pending()
    await old.pull_to_stable()

    ctx.step("new phone signs in and hydrates from a snapshot")
    new = await ctx.device("phone-replacement")
    await new.sign_in(user)
    await new.rebuild()
    ctx.check(await new.has_user(original), "replacement device has the original row")
    added = await new.create_user("Replacement Device User", "replacement-device@example.com")
    await new.push_pending()
    await new.pull_to_stable()
    await old.pull_to_stable()
    for device in (old, new):
        ctx.equal(await device.user_ids(), {original, added}, f"{device.name} users")
    ctx.equal(await ctx.verifier.live_rows(user, "users"), 2, "server live users")


@scenario("offline-online", "Offline/Online", "Network transitions, pending changes")
async def offline_online(ctx: ScenarioContext) -> None:
    """go-oversync only scaffolds this one; here it is real.

    A phone edits through a network outage (sync attempts fail, edits stay queued, nothing is
    lost), a tablet keeps working online meanwhile, and both converge once the phone is back.
    """
    user = ctx.user("user-offline-online")
    phone = await ctx.device("phone")
    tablet = await ctx.device("tablet")
    await phone.sign_in(user, background=False)
    await tablet.sign_in(user, background=False)
    base = [await phone.create_user(f"Base {i}", f"base{i}@example.com") for i in range(3)]
    await phone.push_pending()
    await tablet.pull_to_stable()

    ctx.step("phone loses the network and keeps editing")
    phone.network.online = False
    offline_new = await phone.create_user("Offline Ada", "offline.ada@example.com")
    await phone.update_user(base[0], "Base 0 edited offline", "base0.offline@example.com")
    await phone.delete_user(base[1])
    ctx.equal(await phone.pending_count(), 3, "edits queued while offline")
    try:
        await phone.client.push_pending()
    except Exception as exc:  # whatever the client maps "no network" to
        ctx.debug(f"push while offline failed as expected: {exc!r}")
    else:
        ctx.check(False, "a push without network must fail")
    # The failed attempt may already have frozen the edits into the outbox: count both.
    status = await phone.client.pending_sync_status()
    ctx.equal(status.pending_row_count, 3, "a failed push keeps every queued edit")
    seq_before = await phone.last_seq()

    ctx.step("tablet keeps syncing while the phone is offline")
    tablet_new = await tablet.create_user("Tablet Bob", "tablet.bob@example.com")
    await tablet.update_user(base[2], "Base 2 edited on tablet", "base2.tablet@example.com")
    await tablet.push_pending()
    ctx.equal(await phone.last_seq(), seq_before, "offline phone checkpoint unchanged")

    ctx.step("phone is back online: push the queue, pull the tablet's work")
    phone.network.online = True
    await phone.push_pending()
    ctx.equal(await phone.pending_count(), 0, "queue drained after reconnect")
    await phone.pull_to_stable()
    await tablet.pull_to_stable()
    expected = {base[0], base[2], offline_new, tablet_new}
    for device in (phone, tablet):
        ctx.equal(await device.user_ids(), expected, f"{device.name} users after reconnect")
        name = await device.scalar("SELECT name FROM users WHERE id = :id", {"id": base[0]})
        ctx.equal(name, "Base 0 edited offline", f"{device.name} sees the offline edit")
        name = await device.scalar("SELECT name FROM users WHERE id = :id", {"id": base[2]})
        ctx.equal(name, "Base 2 edited on tablet", f"{device.name} sees the tablet edit")
    ctx.equal(await phone.last_seq(), await tablet.last_seq(), "both checkpoints equal")
    ctx.equal(await ctx.verifier.business_ids(user, "users"), expected, "server users")


@scenario("user-switch", "User Switch", "Multiple users, database isolation")
async def user_switch(ctx: ScenarioContext) -> None:
    """go-oversync only scaffolds this one; here it is real.

    Two accounts share one phone. Detach is refused while edits are unsynced; detaching wipes
    the account's rows; guest edits made while signed out seed the next *empty* account; an
    account with server data gets exactly its own rows back; no row ever crosses scopes.
    """
    alice, bob = ctx.user("user-switch-alice"), ctx.user("user-switch-bob")
    phone = await ctx.device("shared-phone")
    await phone.sign_in(alice, background=False)
    alice_rows = {await phone.create_user(f"Alice {i}", f"alice{i}@example.com") for i in range(3)}

    ctx.step("sign-out is refused while Alice has unsynced edits")
    blocked = await phone.client.detach()
    ctx.equal(blocked.outcome, DetachOutcome.BLOCKED_UNSYNCED_DATA, "detach with pending rows")
    ctx.equal(blocked.pending_row_count, 3, "pending rows reported by the refused detach")
    await phone.push_pending()
    await phone.detach()
    ctx.equal(await phone.count("users"), 0, "detach removes Alice's rows from the phone")

    ctx.step("a guest edit while signed out is pending but blocks nothing")
    guest = await phone.create_user("Guest", "guest@example.com")
    ctx.equal(phone.ui.banner, OFFLINE_BANNER, "banner after sign-out")
    ctx.equal(await phone.pending_count(), 1, "pending badge of the guest edit")

    ctx.step("Bob (new account) signs in: the guest edit seeds his account")
    attach = await phone.sign_in(bob, background=False)
    ctx.equal(attach.outcome, AttachOutcome.SEEDED_FROM_LOCAL, "Bob's attach outcome")
    bob_rows = {guest, await phone.create_user("Bob", "bob@example.com")}
    try:
        await phone.client.push_pending()
    except SourceRecoveryRequiredError as exc:
        # CLIENT.md §12.28: the device's source sequence continues Alice's numbering, but the
        # server expects source_bundle_id 1 for a (user, source) pair it has never seen.
        raise ScenarioFailure(
            f"library bug (CLIENT.md §12.28): Bob's first push on a device that pushed for "
            f"Alice is refused: {exc}"
        ) from exc
    result = await phone.client.sync_then_detach()
    ctx.check(result.is_success, f"Bob signs out cleanly ({result})")

    ctx.step("Alice signs back in and gets exactly her rows")
    attach = await phone.sign_in(alice, background=False)
    ctx.equal(attach.outcome, AttachOutcome.USED_REMOTE_STATE, "Alice's attach outcome")
    ctx.equal(await phone.user_ids(), alice_rows, "Alice's rows restored, none of Bob's")

    v = ctx.verifier
    ctx.equal(await v.business_ids(alice, "users"), alice_rows, "server rows of Alice")
    ctx.equal(await v.business_ids(bob, "users"), bob_rows, "server rows of Bob")
