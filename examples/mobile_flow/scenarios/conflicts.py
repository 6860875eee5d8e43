"""Concurrent edits of one row on two devices, resolved three ways."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from examples.mobile_flow.context import ScenarioContext, scenario
from examples.mobile_flow.device import Device
from examples.mobile_flow.schema import client_config
from oversync_sa.client.conflicts import (
    AcceptServer,
    ClientWinsResolver,
    ConflictContext,
    ConflictResolver,
    KeepMerged,
    MergeResult,
    ServerWinsResolver,
)

_BASE_TIME = datetime(2026, 3, 24, 18, 0, tzinfo=UTC)


class LatestUpdatedAtResolver:
    """Keep whichever version has the later ``updated_at`` (ties go to the device)."""

    def resolve(self, context: ConflictContext) -> MergeResult:
        local, server = context.local_payload, context.server_row
        if context.local_op != "UPDATE" or not local or not server:
            return AcceptServer()
        try:
            local_at, server_at = _instant(local["updated_at"]), _instant(server["updated_at"])
        except (KeyError, TypeError, ValueError):
            return AcceptServer()
        return KeepMerged(dict(local if local_at >= server_at else server))


def _instant(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _email(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "-", name.lower()) + "@example.com"


@dataclass
class _Case:
    name: str
    resolver: ConflictResolver
    server_name: str
    local_name: str
    server_at: datetime
    local_at: datetime
    server_should_win: bool
    target: str = field(default_factory=lambda: str(uuid.uuid4()))
    siblings: list[str] = field(default_factory=list)


async def _assert_user(
    ctx: ScenarioContext, device: Device, key: str, name: str, updated_at: datetime
) -> None:
    row = await device.rows("SELECT name, email, updated_at FROM users WHERE id = :id", {"id": key})
    ctx.check(row, f"{device.name}: user {key} missing")
    actual_name, actual_email, actual_at = row[0]
    ctx.equal((actual_name, actual_email), (name, _email(name)), f"{device.name} {key}")
    ctx.equal(_instant(actual_at), updated_at, f"{device.name} updated_at of {name}")


async def _converged(ctx: ScenarioContext, d1: Device, d2: Device, label: str) -> None:
    ctx.equal(await d1.count("users"), await d2.count("users"), f"user counts after {label}")
    ctx.equal(await d1.last_seq(), await d2.last_seq(), f"checkpoints after {label}")


@scenario(
    "conflicts",
    "Multi-Device Conflicts",
    "Concurrent edits: server-wins, client-wins and a latest-updated_at merge",
)
async def conflicts(ctx: ScenarioContext) -> None:
    user = ctx.user("user-conflicts")
    # UploadLimit 3 makes every conflicting push span several chunks.
    config = client_config(upload_limit=3, download_limit=100, backoff_min=0.1, backoff_max=2)
    d1 = await ctx.device("device-1", config=config)
    d2 = await ctx.device("device-2", config=config)
    for device in (d1, d2):
        await device.sign_in(user, background=False)
    for device in (d1, d2):
        await device.rebuild()
    minute = timedelta(minutes=1)
    cases = [
        _Case(
            "server-wins",
            ServerWinsResolver(),
            "Server Wins Authoritative",
            "Server Wins Local",
            _BASE_TIME + minute,
            _BASE_TIME + 2 * minute,
            True,
        ),
        _Case(
            "client-wins",
            ClientWinsResolver(),
            "Client Wins Server",
            "Client Wins Local",
            _BASE_TIME + 3 * minute,
            _BASE_TIME + 4 * minute,
            False,
        ),
        _Case(
            "latest-updated-at-merge",
            LatestUpdatedAtResolver(),
            "Merge Server Later",
            "Merge Local Earlier",
            _BASE_TIME + 6 * minute,
            _BASE_TIME + 5 * minute,
            True,
        ),
    ]
    siblings = ctx.sizes.conflict_siblings

    ctx.step(f"device 1 seeds {len(cases)} targets with {siblings} siblings each")
    for case in cases:
        await d1.create_user(
            f"{case.name} baseline", f"{case.name}@example.com", user_id=case.target
        )
        for i in range(1, siblings + 1):
            case.siblings.append(
                await d1.create_user(
                    f"{case.name} sibling baseline {i:02d}", f"{case.name}-sibling-{i:02d}@ex.com"
                )
            )
    await d1.push_pending()
    await d1.pull_to_stable()
    await d2.rebuild()
    await _converged(ctx, d1, d2, "baseline")

    for case in cases:
        ctx.step(f"case {case.name}")
        d2.client.resolver = case.resolver
        await d1.update_user(
            case.target,
            case.server_name,
            _email(case.server_name),
            updated_at=_stamp(case.server_at),
        )
        await d1.push_pending()
        await d1.pull_to_stable()
        await d2.update_user(
            case.target, case.local_name, _email(case.local_name), updated_at=_stamp(case.local_at)
        )
        expected_siblings = {}
        for i, key in enumerate(case.siblings, start=1):
            name = f"{case.name} sibling local {i:02d}"
            moment = case.local_at + timedelta(seconds=i)
            await d2.update_user(key, name, _email(name), updated_at=_stamp(moment))
            expected_siblings[key] = (name, moment)
        d2.client.push_stats.reset()
        await d2.push_pending()  # 409 push_conflict -> resolver -> automatic second attempt
        await d2.pull_to_stable()
        await d1.pull_to_stable()

        stats = d2.client.push_stats
        ctx.equal(stats.sessions_created, 2, f"{case.name}: push sessions (conflict + retry)")
        ctx.check(
            stats.chunks_uploaded >= 4,
            f"{case.name}: expected a multi-chunk upload, got {stats.chunks_uploaded}",
        )
        winner = (
            (case.server_name, case.server_at)
            if case.server_should_win
            else (case.local_name, case.local_at)
        )
        for device in (d1, d2):
            await _assert_user(ctx, device, case.target, *winner)
            for key, (name, moment) in expected_siblings.items():
                await _assert_user(ctx, device, key, name, moment)
        ctx.equal(
            await d2.push_recovery_counts(),
            (0, 0, 0),
            f"{case.name}: device 2 outbox/stage/dirty after recovery",
        )
        await _converged(ctx, d1, d2, case.name)

    ctx.equal(
        await ctx.verifier.live_rows(user, "users"),
        len(cases) * (1 + siblings),
        "server live users",
    )
