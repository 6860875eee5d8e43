"""Convergence under random scripts: N real devices, the real server, real PostgreSQL.

Each Hypothesis example is a script of operations over the Go example schema
(:mod:`examples.business_models`): local inserts/updates/deletes that keep foreign keys valid
(nullable FK, self-referencing cascade, the teams <-> team_members cycle, BLOBs, typed values),
contested updates of other writers' rows, push / pull / sync / rebuild / detach + re-attach
(possibly to the other user) / restart, server-originated writes through ``ScopeManager``,
retention pruning that forces ``history_pruned``, and - when the example turns them on -
network faults from :mod:`oversync_sa.testing.faults`.

Invariants
----------
Between steps, on the device that acted:
  * no partial bundle is visible: a team always has exactly the members its name announces,
    all renamed with it, and its captain among them; a file always has its announced reviews;
    no child row outlives its cascade parent;
  * no row of another scope ever appears;
  * the pull checkpoint never goes back (per attachment).
After each acknowledged push (pushed, nothing left pending): the server holds exactly the
writer's rows (no acknowledged write lost).
After quiescence (faults off, everyone syncs until stable):
  * every device's business tables equal the server's rows of its scope;
  * the server's rows equal the oracle of accepted writes (rows touched by a contested update,
    and their cascade descendants, are left out: who wins there is the resolver's business);
  * every device's checkpoint is the scope's head; no (source, source_bundle_id) is logged
    twice (no bundle committed twice).

Oracle: every writer (a device in a scope, or the server writer) owns the rows it created and
is the only one to insert, delete or re-parent them; parents are picked among its own rows. So
without contested updates there are no conflicts and the expected server state is the union
of each writer's last acknowledged local state.

Profiles: ``OVERSYNC_PROPERTY_PROFILE=ci`` (default; derandomized, bounded) or ``deep``.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, note, settings, strategies as st
from sqlalchemy.ext.asyncio import create_async_engine

from oversync_sa.client.errors import (
    DirtyStateRejectedError,
    PendingPushReplayError,
    PushConflictRetryExhaustedError,
    RebuildRequiredError,
    RetryExhaustedError,
    SourceRecoveryRequiredError,
    UnexpectedStatusError,
)
from oversync_sa.client.results import AttachStatus, DetachOutcome, PushOutcome
from oversync_sa.client.triggers import TRANSITION_PENDING_MESSAGE
from oversync_sa.errors import WireError
from oversync_sa.testing import sqlalchemy_url
from oversync_sa.testing.faults import (
    FaultInjector,
    delay,
    drop_request,
    drop_response,
    duplicate,
    fail_status,
)
from tests.e2e.client._support import FAST_RETRY, Device, Harness, ServerProcess

pytestmark = pytest.mark.postgres

# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    name: str
    devices: int
    min_ops: int
    max_ops: int


PROFILES = {
    "ci": Profile("ci", devices=3, min_ops=20, max_ops=60),
    "deep": Profile("deep", devices=10, min_ops=500, max_ops=500),
}
PROFILE_NAME = os.environ.get("OVERSYNC_PROPERTY_PROFILE", "ci")
if PROFILE_NAME not in PROFILES:
    raise pytest.UsageError(
        f"OVERSYNC_PROPERTY_PROFILE={PROFILE_NAME!r}; expected one of {sorted(PROFILES)}"
    )
PROFILE = PROFILES[PROFILE_NAME]
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
         HealthCheck.function_scoped_fixture]
# CI: derandomized (the same scripts every run) and no example database, so a failure in CI
# is the same failure locally. Deep: random, and the failing example is printed as a blob.
# Neither shrinks: every shrink attempt replays a whole multi-device script over HTTP (one
# failure took over five minutes to shrink); replay the printed blob with @reproduce_failure
# and OVERSYNC_PROPERTY_SHRINK=1 to minimise it.
_PHASES = (
    list(Phase) if os.environ.get("OVERSYNC_PROPERTY_SHRINK")
    else [Phase.explicit, Phase.reuse, Phase.generate]
)
settings.register_profile("oversync-ci", max_examples=16, deadline=None, derandomize=True,
                          database=None, suppress_health_check=_SLOW, print_blob=True,
                          phases=_PHASES)
settings.register_profile("oversync-deep", max_examples=20, deadline=None,
                          suppress_health_check=_SLOW, print_blob=True, phases=_PHASES)

# --------------------------------------------------------------------------- schema facts

COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("name", "email"),
    "posts": ("title", "content", "author_id"),
    "categories": ("name", "parent_id"),
    "teams": ("name", "captain_member_id"),
    "team_members": ("name", "team_id"),
    "files": ("name", "data"),
    "file_reviews": ("review", "file_id"),
    "typed_rows": ("name", "note", "count_value", "enabled_flag", "rating", "data"),
}
TABLES = tuple(COLUMNS)
UUID_COLUMNS = {"author_id", "parent_id", "captain_member_id", "team_id", "file_id"}
#: child table -> (FK column, parent table) for the ON DELETE CASCADE edges.
CASCADES = {
    "categories": ("parent_id", "categories"),
    "team_members": ("team_id", "teams"),
    "file_reviews": ("file_id", "files"),
}
#: Columns a contested (non-owner) update may change.
CONTESTABLE = {"users": "name", "posts": "title", "typed_rows": "name", "categories": "name"}

Row = tuple[Any, ...]
Tables = dict[str, dict[uuid.UUID, Row]]


def empty_tables() -> Tables:
    return {t: {} for t in TABLES}


def _value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in UUID_COLUMNS:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(bytes=bytes(value))
    if isinstance(value, memoryview):
        return bytes(value)
    return value


# --------------------------------------------------------------------------- script strategy

WRITE_KINDS = (
    "insert_user", "insert_post", "update_user", "update_post", "delete_user",
    "insert_category", "update_category", "delete_category",
    "insert_team", "touch_team", "delete_team",
    "insert_file", "update_file", "delete_file",
    "insert_typed", "update_typed", "delete_typed",
    "contested_update",
)
OTHER_KINDS = (
    "push", "pull", "sync", "sync", "sync", "rebuild", "switch", "restart",
    "server_write", "server_write", "prune",
)
KINDS = WRITE_KINDS * 2 + OTHER_KINDS

texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00",
                              exclude_categories=("Cs",)), max_size=6)


@dataclass(frozen=True)
class Op:
    kind: str
    device: int
    pick: int
    text: str
    blob: bytes
    number: int
    real: float | None

    def __repr__(self) -> str:  # short lines in Hypothesis' falsifying-example output
        return (f"Op({self.kind!r}, d{self.device}, pick={self.pick}, text={self.text!r}, "
                f"blob={self.blob!r}, number={self.number}, real={self.real!r})")


_PRINTF = sqlite3.connect(":memory:", check_same_thread=False)


def _sqlite_prints_exactly(x: float) -> bool:
    text = _PRINTF.execute("SELECT printf('%!.17g', ?)", (x,)).fetchone()[0]
    return float(text) == x


ops = st.builds(
    Op,
    kind=st.sampled_from(KINDS),
    device=st.integers(0, PROFILE.devices - 1),
    pick=st.integers(0, 1 << 16),
    text=texts,
    blob=st.binary(max_size=24),
    # Within +-2^53: larger integers are rounded through float64 (CLIENT.md §12.39; see
    # test_property_typed_values.py, an xfail).
    number=st.integers(-(1 << 53), 1 << 53),
    # Rounded to 15 significant digits: trigger capture is lossy beyond that (CLIENT.md
    # §12.38; see test_property_typed_values.py, an xfail); this test is about convergence.
    # Rounding can overflow (1.7976931348623157e308 -> "1.79769313486232e+308" -> inf), and a
    # non-finite REAL is not syncable at all, so those are dropped after the rounding. The
    # capture renders REAL with SQLite's printf('%!.17g'), which is inexact for some huge
    # doubles even with 15 digits (-1.14642198652625e+302 is captured as
    # -1.1464219865262499e+302): that residual is test_property_typed_values.py's strict xfail,
    # so those are dropped too.
    real=st.none() | st.floats(allow_nan=False, allow_infinity=False).map(
        lambda x: float(f"{x:.15g}")
    ).filter(math.isfinite).filter(lambda x: _sqlite_prints_exactly(x)),
)
scripts = st.lists(ops, min_size=PROFILE.min_ops, max_size=PROFILE.max_ops)

# Faults only while the script runs; quiescence is fault-free. The rates make most scripts
# meet several faults without making every push fail.
FAULT_RULES = (
    lambda: drop_response("POST", "/sync/push-sessions/*/commit", rate=0.15),
    lambda: drop_request(rate=0.03),
    lambda: duplicate("POST", "/sync/push-sessions/*/commit", rate=0.05, reply="last"),
    lambda: duplicate("POST", "/sync/push-sessions/*/chunks", rate=0.05),
    lambda: fail_status(503, "GET", "/sync/pull", rate=0.05),
    lambda: delay(0.005, rate=0.1),
)

#: What a step may legitimately raise while faults are on (or after pruning): the client is
#: expected to recover from all of these on a later call.
RECOVERABLE = (
    # A bare pull refuses to overwrite unpushed local rows (CLIENT.md §7): the script's
    # problem, not the client's - the next sync pushes first.
    DirtyStateRejectedError,
    httpx.TransportError, RetryExhaustedError, PendingPushReplayError, RebuildRequiredError,
    SourceRecoveryRequiredError, UnexpectedStatusError,
    # Each 409 names one conflict, and one push makes at most 3 attempts (CLIENT.md §6.5): a
    # device with more conflicting rows than that resolves the rest on its next push.
    PushConflictRetryExhaustedError,
)
RECOVERABLE_CODES = {
    "push_session_not_found", "push_chunk_out_of_order", "history_pruned",
    "committed_bundle_not_found",
}


# --------------------------------------------------------------------------- the simulation


@dataclass
class SimDevice:
    device: Device
    user: str | None = None
    #: Checkpoints seen since the last attach; must never decrease.
    checkpoints: list[int] = field(default_factory=list)


class Simulation:
    def __init__(self, harness: Harness, users: list[str], faults: bool, seed: int) -> None:
        self.h = harness
        self.users = users
        self.injector = FaultInjector(
            [make() for make in FAULT_RULES] if faults else [], seed=seed
        )
        self.devices: list[SimDevice] = []
        #: writer -> its own view of the rows it owns; writer = (device name | "srv", scope).
        self.owned: dict[tuple[str, str], Tables] = {}
        #: every id a writer ever created (ids are unique across writers and scopes).
        self.created: dict[tuple[str, str], set[uuid.UUID]] = {}
        self.scope_of: dict[uuid.UUID, str] = {}
        #: expected server state per scope (acknowledged writes only).
        self.model: dict[str, Tables] = {u: empty_tables() for u in users}
        self.contested: set[uuid.UUID] = set()
        self._next_id = 0
        self.errors: list[str] = []
        self.acks = 0
        self.prune_enabled = True

    # -- helpers ---------------------------------------------------------------------------

    def new_id(self, scope: str, writer: tuple[str, str]) -> uuid.UUID:
        self._next_id += 1
        value = uuid.UUID(int=(0x5EED << 64) | self._next_id)
        self.scope_of[value] = scope
        self.created.setdefault(writer, set()).add(value)
        return value

    def mine(self, writer: tuple[str, str]) -> Tables:
        return self.owned.setdefault(writer, empty_tables())

    async def start(self, count: int) -> None:
        for index in range(count):
            # The last device starts in the second scope: two scopes share the server.
            user = self.users[1] if index == count - 1 and count > 1 else self.users[0]
            device = await self.h.device(
                f"d{index}", user=user, transport=self.injector.transport(label=f"d{index}"),
                retry=FAST_RETRY,
            )
            sim = SimDevice(device)
            self.devices.append(sim)
            await self.attach(sim, user)

    async def attach(self, sim: SimDevice, user: str) -> bool:
        try:
            result = await sim.device.attach(user)
        except RECOVERABLE as exc:
            self.errors.append(f"attach {sim.device.name}: {exc!r}")
            return False
        if result.status is not AttachStatus.CONNECTED:
            return False
        if sim.user != user:
            sim.checkpoints = []
        sim.user = user
        return True

    async def ensure_attached(self, sim: SimDevice) -> bool:
        if sim.user is not None:
            return True
        return await self.attach(sim, sim.device.user)

    async def ack_if_clean(self, sim: SimDevice) -> None:
        """Everything local reached the server: fold the writer's rows into the model."""
        assert sim.user is not None
        if (await sim.device.c.pending_sync_status()).has_pending_sync_data:
            return
        writer = (sim.device.name, sim.user)
        await self.ack(writer, sim.user)

    async def ack(self, writer: tuple[str, str], scope: str) -> None:
        self.acks += 1
        ids = self.created.get(writer, set())
        mine = self.mine(writer)
        model = self.model[scope]
        for table in TABLES:
            kept = {k: v for k, v in model[table].items() if k not in ids}
            model[table] = {**kept, **mine[table]}
        # No acknowledged write lost: the server has exactly this writer's rows right now.
        server = await self.server_tables(scope)
        unknown = self.unknown(server, model)
        for table in TABLES:
            got = {k: v for k, v in server[table].items() if k in ids and k not in unknown}
            want = {k: v for k, v in mine[table].items() if k not in unknown}
            assert got == want, f"{writer} acknowledged {table} rows differ on the server"

    def unknown(self, *states: Tables) -> set[uuid.UUID]:
        """Contested rows and their cascade descendants (in any of ``states``)."""
        unknown = set(self.contested)
        grew = True
        while grew:
            grew = False
            for state in states:
                for child, (column, _parent) in CASCADES.items():
                    position = COLUMNS[child].index(column)
                    for key, row in state[child].items():
                        if key not in unknown and row[position] in unknown:
                            unknown.add(key)
                            grew = True
        return unknown

    async def server_tables(self, scope: str) -> Tables:
        tables = empty_tables()
        async with self.h.pg.connect() as conn:
            for table, columns in COLUMNS.items():
                result = await conn.execute(sa.text(
                    f"SELECT id, {', '.join(columns)} FROM business.{table}"
                    " WHERE _sync_scope_id = :u"
                ), {"u": scope})
                for row in result:
                    tables[table][row[0]] = tuple(
                        _value(c, v) for c, v in zip(columns, row[1:], strict=True)
                    )
        return tables

    async def local_tables(self, device: Device) -> Tables:
        tables = empty_tables()
        for table, columns in COLUMNS.items():
            for row in await device.rows(f"SELECT id, {', '.join(columns)} FROM {table}"):
                tables[table][uuid.UUID(bytes=row[0])] = tuple(
                    _value(c, v) for c, v in zip(columns, row[1:], strict=True)
                )
        return tables

    # -- between-step invariants -----------------------------------------------------------

    async def check_device(self, sim: SimDevice) -> None:
        device = sim.device
        if device.client is None:
            return
        local = await self.local_tables(device)
        name = device.name
        # Scope isolation: every row was created in the scope the device is attached to.
        if sim.user is not None:
            foreign = {
                (t, k) for t in TABLES for k in local[t] if self.scope_of.get(k) != sim.user
            }
            assert not foreign, f"{name} sees rows of another scope: {sorted(foreign)[:5]}"
        # No partial bundle: team groups are written, renamed and deleted whole.
        members_of: dict[uuid.UUID, list[tuple[uuid.UUID, str]]] = {}
        for key, (member_name, team_id) in local["team_members"].items():
            assert team_id in local["teams"], f"{name}: member {key} without its team"
            members_of.setdefault(team_id, []).append((key, member_name))
        for key, (team_name, captain) in local["teams"].items():
            _, size, token = team_name.split(":", 2)
            members = members_of.get(key, [])
            assert len(members) == int(size), f"{name}: team {key} is partial: {members}"
            assert {m for _, m in members} == {f"m:{token}"}, f"{name}: team {key} half renamed"
            assert captain in {m for m, _ in members}, f"{name}: team {key} captain missing"
        reviews_of: dict[uuid.UUID, int] = {}
        for key, (_review, file_id) in local["file_reviews"].items():
            assert file_id in local["files"], f"{name}: review {key} without its file"
            reviews_of[file_id] = reviews_of.get(file_id, 0) + 1
        for key, (file_name, _data) in local["files"].items():
            expected = int(file_name.split(":")[1])
            assert reviews_of.get(key, 0) == expected, f"{name}: file {key} is partial"
        for key, (_n, parent) in local["categories"].items():
            assert parent is None or parent in local["categories"], (
                f"{name}: category {key} outlived its parent"
            )
        # Checkpoints never go back while attached to the same scope.
        if sim.user is not None:
            seen = await device.c.last_bundle_seq_seen()
            assert not sim.checkpoints or seen >= sim.checkpoints[-1], (
                f"{name}: checkpoint went back {sim.checkpoints[-1]} -> {seen}"
            )
            sim.checkpoints.append(seen)

    # -- steps -----------------------------------------------------------------------------

    async def step(self, op: Op) -> None:
        # Debugging aid: OVERSYNC_PROPERTY_SKIP=prune,restart replays the same scripts without
        # those kinds of operation, to see which one a failure needs.
        if op.kind in os.environ.get("OVERSYNC_PROPERTY_SKIP", "").split(",") or (
            op.kind == "prune" and not self.prune_enabled
        ):
            return
        sim = self.devices[op.device % len(self.devices)]
        try:
            await self._step(op, sim)
        except RECOVERABLE as exc:
            self.errors.append(f"{op!r}: {exc!r}")
        except WireError as exc:
            if exc.code not in RECOVERABLE_CODES:
                raise
            self.errors.append(f"{op!r}: {exc!r}")
        await self.check_device(sim)

    async def _step(self, op: Op, sim: SimDevice) -> None:
        if op.kind == "server_write":
            await self.server_write(op)
            return
        if op.kind == "prune":
            await self.prune(op)
            return
        if op.kind == "restart":
            await sim.device.restart(
                transport=self.injector.transport(label=sim.device.name)
            )
            if sim.user is not None:
                sim.user = None
                await self.attach(sim, sim.device.user)
            return
        if not await self.ensure_attached(sim):
            return
        client = sim.device.c
        if op.kind in WRITE_KINDS:
            await self.write(op, sim)
        elif op.kind == "push":
            if (await client.push_pending()).outcome is not PushOutcome.SKIPPED_PAUSED:
                await self.ack_if_clean(sim)
        elif op.kind == "pull":
            await client.pull_to_stable()
        elif op.kind == "sync":
            await client.sync()
            await self.ack_if_clean(sim)
        elif op.kind == "rebuild":
            # A rebuild replaces local state; it is only offered with nothing left to push
            # (pending rows would be the application's to lose, not a sync defect).
            await client.sync()
            await self.ack_if_clean(sim)
            if not (await client.pending_sync_status()).has_pending_sync_data:
                await client.rebuild()
        elif op.kind == "switch":
            await client.sync()
            await self.ack_if_clean(sim)
            if (await client.detach()).outcome is DetachOutcome.DETACHED:
                sim.user = None
                sim.checkpoints = []
                await self.attach(sim, self.users[op.pick % len(self.users)])
        else:  # pragma: no cover - the strategy only draws known kinds
            raise AssertionError(op.kind)

    async def write(self, op: Op, sim: SimDevice) -> None:
        assert sim.user is not None
        writer = (sim.device.name, sim.user)
        mine = self.mine(writer)
        saved = ({t: dict(rows) for t, rows in mine.items()},
                 set(self.created.get(writer, set())), set(self.contested))
        statements = self.plan_write(op, writer, mine)
        if op.kind == "contested_update":
            statements = await self.plan_contested(op, sim, mine)
        if not statements:
            return
        try:
            await sim.device.execute_many(statements)
        except sa.exc.IntegrityError as exc:
            # While source recovery or a remote replace is pending the guard triggers refuse
            # application writes (CLIENT.md §3, "guards block app writes"): the write never
            # happened, so neither does its effect on the model.
            if TRANSITION_PENDING_MESSAGE not in str(exc):
                raise
            mine.clear()
            mine.update(saved[0])
            self.created[writer] = saved[1]
            self.contested = saved[2]
            self.errors.append(f"{op!r}: refused, transition pending")

    def plan_write(
        self, op: Op, writer: tuple[str, str], mine: Tables
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """The SQL for one local write, applied to the writer's model at the same time."""
        scope = writer[1]
        pick, text = op.pick, op.text

        def choose(table: str) -> uuid.UUID | None:
            keys = sorted(mine[table])
            return keys[pick % len(keys)] if keys else None

        kind = op.kind
        if kind == "insert_user":
            key = self.new_id(scope, writer)
            mine["users"][key] = (text, f"{key.hex[-6:]}@example.com")
            return [("INSERT INTO users (id, name, email) VALUES (?, ?, ?)",
                     (key.bytes, *mine["users"][key]))]
        if kind == "insert_post":
            users = sorted(mine["users"])
            author = users[pick % (len(users) + 1)] if pick % (len(users) + 1) < len(users) \
                else None
            key = self.new_id(scope, writer)
            mine["posts"][key] = (text, "body", author)
            return [("INSERT INTO posts (id, title, content, author_id) VALUES (?, ?, ?, ?)",
                     (key.bytes, text, "body", author.bytes if author else None))]
        if kind in ("update_user", "update_post", "update_category"):
            table, column = {"update_user": ("users", "name"), "update_post": ("posts", "title"),
                             "update_category": ("categories", "name")}[kind]
            key = choose(table)
            if key is None:
                return []
            mine[table][key] = (text, *mine[table][key][1:])
            return [(f"UPDATE {table} SET {column} = ? WHERE id = ?", (text, key.bytes))]
        if kind == "delete_user":
            key = choose("users")
            if key is None:
                return []
            # posts.author_id has no cascade: unlink the posts in the same transaction.
            statements: list[tuple[str, tuple[Any, ...]]] = []
            for post, row in mine["posts"].items():
                if row[2] == key:
                    mine["posts"][post] = (row[0], row[1], None)
                    statements.append(("UPDATE posts SET author_id = NULL WHERE id = ?",
                                       (post.bytes,)))
            del mine["users"][key]
            return [*statements, ("DELETE FROM users WHERE id = ?", (key.bytes,))]
        if kind == "insert_category":
            parents = sorted(mine["categories"])
            parent = parents[pick % len(parents)] if parents and pick % 3 else None
            key = self.new_id(scope, writer)
            mine["categories"][key] = (text, parent)
            return [("INSERT INTO categories (id, name, parent_id) VALUES (?, ?, ?)",
                     (key.bytes, text, parent.bytes if parent else None))]
        if kind == "delete_category":
            key = choose("categories")
            if key is None:
                return []
            self.cascade_delete(mine, "categories", key)
            return [("DELETE FROM categories WHERE id = ?", (key.bytes,))]
        if kind == "insert_team":
            size = 1 + pick % 3
            team = self.new_id(scope, writer)
            members = [self.new_id(scope, writer) for _ in range(size)]
            token = text.replace(":", "")
            # The cycle: the team names its captain before the member row exists.
            mine["teams"][team] = (f"team:{size}:{token}", members[0])
            statements = [("INSERT INTO teams (id, name, captain_member_id) VALUES (?, ?, ?)",
                           (team.bytes, f"team:{size}:{token}", members[0].bytes))]
            for member in members:
                mine["team_members"][member] = (f"m:{token}", team)
                statements.append(("INSERT INTO team_members (id, name, team_id) VALUES (?, ?, ?)",
                                    (member.bytes, f"m:{token}", team.bytes)))
            return statements
        if kind == "touch_team":
            team = choose("teams")
            if team is None:
                return []
            name, captain = mine["teams"][team]
            size = name.split(":")[1]
            token = f"{text.replace(':', '')}{pick}"
            mine["teams"][team] = (f"team:{size}:{token}", captain)
            for member, (_old, team_id) in mine["team_members"].items():
                if team_id == team:
                    mine["team_members"][member] = (f"m:{token}", team)
            return [("UPDATE teams SET name = ? WHERE id = ?",
                     (f"team:{size}:{token}", team.bytes)),
                    ("UPDATE team_members SET name = ? WHERE team_id = ?",
                     (f"m:{token}", team.bytes))]
        if kind == "delete_team":
            team = choose("teams")
            if team is None:
                return []
            self.cascade_delete(mine, "teams", team)
            return [("DELETE FROM teams WHERE id = ?", (team.bytes,))]
        if kind == "insert_file":
            reviews = pick % 3
            key = self.new_id(scope, writer)
            mine["files"][key] = (f"file:{reviews}", op.blob)
            statements = [("INSERT INTO files (id, name, data) VALUES (?, ?, ?)",
                           (key.bytes, f"file:{reviews}", op.blob))]
            for index in range(reviews):
                review = self.new_id(scope, writer)
                mine["file_reviews"][review] = (f"{text}{index}", key)
                statements.append(("INSERT INTO file_reviews (id, review, file_id)"
                                   " VALUES (?, ?, ?)", (review.bytes, f"{text}{index}",
                                                         key.bytes)))
            return statements
        if kind == "update_file":
            key = choose("files")
            if key is None:
                return []
            mine["files"][key] = (mine["files"][key][0], op.blob)
            return [("UPDATE files SET data = ? WHERE id = ?", (op.blob, key.bytes))]
        if kind == "delete_file":
            key = choose("files")
            if key is None:
                return []
            self.cascade_delete(mine, "files", key)
            return [("DELETE FROM files WHERE id = ?", (key.bytes,))]
        if kind in ("insert_typed", "update_typed"):
            key = self.new_id(scope, writer) if kind == "insert_typed" else choose("typed_rows")
            if key is None:
                return []
            row = (text, text if pick % 2 else None, op.number if pick % 3 else None,
                   op.number, op.real, op.blob if pick % 5 else None)
            mine["typed_rows"][key] = row
            if kind == "insert_typed":
                return [("INSERT INTO typed_rows (id, name, note, count_value, enabled_flag,"
                         " rating, data) VALUES (?, ?, ?, ?, ?, ?, ?)", (key.bytes, *row))]
            return [("UPDATE typed_rows SET name = ?, note = ?, count_value = ?,"
                     " enabled_flag = ?, rating = ?, data = ? WHERE id = ?", (*row, key.bytes))]
        if kind == "delete_typed":
            key = choose("typed_rows")
            if key is None:
                return []
            del mine["typed_rows"][key]
            return [("DELETE FROM typed_rows WHERE id = ?", (key.bytes,))]
        assert kind == "contested_update", kind
        return []

    async def plan_contested(
        self, op: Op, sim: SimDevice, mine: Tables
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """Update a row this device sees but another writer owns (a real conflict)."""
        table = sorted(CONTESTABLE)[op.pick % len(CONTESTABLE)]
        keys = sorted(k for k in await sim.device.ids(table) if k not in mine[table])
        if not keys:
            return []
        key = keys[op.pick % len(keys)]
        self.contested.add(key)
        return [(f"UPDATE {table} SET {CONTESTABLE[table]} = ? WHERE id = ?",
                 (op.text, key.bytes))]

    def cascade_delete(self, tables: Tables, table: str, key: uuid.UUID) -> None:
        tables[table].pop(key, None)
        for child, (column, parent) in CASCADES.items():
            if parent != table:
                continue
            position = COLUMNS[child].index(column)
            for child_key in [k for k, r in tables[child].items() if r[position] == key]:
                self.cascade_delete(tables, child, child_key)

    async def server_write(self, op: Op) -> None:
        """A server-originated bundle (ScopeManager.exec_write) on the server writer's rows."""
        scope = self.users[op.pick % len(self.users)]
        writer = ("srv", scope)
        mine = self.mine(writer)
        statements: list[tuple[str, dict[str, Any]]] = []
        choice = op.pick % 4
        categories = sorted(mine["categories"])
        if choice == 0 or (choice == 3 and not categories):
            key = self.new_id(scope, writer)
            parent = categories[op.pick % len(categories)] if categories and op.pick % 2 \
                else None
            statements.append((
                "INSERT INTO business.categories (_sync_scope_id, id, name, parent_id)"
                " VALUES (:scope, :id, :name, :parent)",
                {"id": key, "name": op.text, "parent": parent},
            ))
            mine["categories"][key] = (op.text, parent)
        elif choice == 1:
            key = self.new_id(scope, writer)
            row = (op.text, None, op.number, op.number, op.real, op.blob)
            statements.append((
                "INSERT INTO business.typed_rows (_sync_scope_id, id, name, note, count_value,"
                " enabled_flag, rating, data) VALUES (:scope, :id, :name, :note, :count,"
                " :flag, :rating, :data)",
                {"id": key, "name": op.text, "note": None, "count": op.number,
                 "flag": op.number, "rating": op.real, "data": op.blob},
            ))
            mine["typed_rows"][key] = row
        elif choice == 2 and categories:
            key = categories[op.pick % len(categories)]
            statements.append((
                "UPDATE business.categories SET name = :name"
                " WHERE _sync_scope_id = :scope AND id = :id", {"id": key, "name": op.text},
            ))
            mine["categories"][key] = (op.text, mine["categories"][key][1])
        elif categories:
            key = categories[op.pick % len(categories)]
            statements.append((
                "DELETE FROM business.categories WHERE _sync_scope_id = :scope AND id = :id",
                {"id": key},
            ))
            self.cascade_delete(mine, "categories", key)
        if not statements:
            return
        await self.h.server_write(scope, statements)
        await self.ack(writer, scope)

    async def prune(self, op: Op) -> None:
        """Raise a scope's retention floor to its head: older checkpoints get history_pruned."""
        scope = self.users[op.pick % len(self.users)]
        head = await self.h.server_scalar(
            "SELECT COALESCE(MAX(b.bundle_seq), 0) FROM sync.bundle_log b"
            " JOIN sync.user_state u USING (user_pk) WHERE u.user_id = :u", u=scope,
        )
        if head:
            await self.h.set_retention_floor(scope, int(head))

    # -- quiescence ------------------------------------------------------------------------

    async def quiesce(self) -> None:
        self.injector.enabled = False
        self.injector.release_all()
        for _round in range(8):
            unsettled = False
            for sim in self.devices:
                if not await self.ensure_attached(sim):
                    unsettled = True
                    continue
                try:
                    await sim.device.c.sync()
                except (DirtyStateRejectedError, PushConflictRetryExhaustedError) as exc:
                    # A conflict resolution requeued rows during the push half of the sync, or
                    # more rows conflicted than one push's retry budget: the next round goes on.
                    self.errors.append(f"quiesce {sim.device.name}: {exc!r}")
                    unsettled = True
                    continue
                except (RebuildRequiredError, SourceRecoveryRequiredError) as exc:
                    self.errors.append(f"quiesce {sim.device.name}: {exc!r}")
                    await sim.device.c.rebuild()
                    unsettled = True
                    continue
                if (await sim.device.c.pending_sync_status()).has_pending_sync_data:
                    unsettled = True
            if not unsettled:
                break
        else:
            raise AssertionError(f"no quiescence after 8 rounds; errors: {self.errors[-5:]}")
        # Everyone has pushed; one more round so everyone has pulled everyone else's bundles.
        for sim in self.devices:
            report = await sim.device.c.sync()
            assert report.push_outcome is PushOutcome.NO_CHANGE, sim.device.name
            await self.ack_if_clean(sim)
            await self.check_device(sim)

    async def check_converged(self) -> None:
        for scope in self.users:
            server = await self.server_tables(scope)
            model = self.model[scope]
            unknown = self.unknown(server, model)
            for table in TABLES:
                got = {k: v for k, v in server[table].items() if k not in unknown}
                want = {k: v for k, v in model[table].items() if k not in unknown}
                assert got == want, f"server {table} of {scope} differs from the oracle"
            head = await self.h.server_scalar(
                "SELECT COALESCE(MAX(b.bundle_seq), 0) FROM sync.bundle_log b"
                " JOIN sync.user_state u USING (user_pk) WHERE u.user_id = :u", u=scope,
            )
            duplicates = await self.h.server_scalar(
                "SELECT COUNT(*) FROM (SELECT 1 FROM sync.bundle_log b"
                " JOIN sync.user_state u USING (user_pk) WHERE u.user_id = :u"
                " GROUP BY b.source_id, b.source_bundle_id HAVING COUNT(*) > 1) d", u=scope,
            )
            assert duplicates == 0, f"a bundle of {scope} was committed twice"
            for sim in self.devices:
                if sim.user != scope:
                    continue
                local = await self.local_tables(sim.device)
                seen = await sim.device.c.last_bundle_seq_seen()
                for table in TABLES:
                    assert local[table] == server[table], (
                        f"{sim.device.name} {table} differs from the server (checkpoint {seen},"
                        f" head {head}, checkpoints {sim.checkpoints})"
                    )
                assert await sim.device.c.last_bundle_seq_seen() == head, sim.device.name


async def run_script(
    server: ServerProcess, url: str, tmp: Path, script: list[Op], faults: bool, seed: int,
    prune: bool,
) -> Simulation:
    engine = create_async_engine(sqlalchemy_url(url), pool_size=2, max_overflow=4)
    harness = Harness(server, url, engine, tmp)
    tag = uuid.uuid4().hex[:10]
    sim = Simulation(harness, [f"prop-{tag}-a", f"prop-{tag}-b"], faults, seed)
    sim.prune_enabled = prune
    try:
        await sim.start(PROFILE.devices)
        for op in script:
            await sim.step(op)
        await sim.quiesce()
        await sim.check_converged()
        return sim
    finally:
        for device in harness.devices:
            await device.close()
        await harness.close()
        await engine.dispose()


@pytest.mark.timeout(0 if PROFILE.name == "deep" else 240)
@pytest.mark.parametrize("prune", [
    pytest.param(False, id="no-prune"),
    # Pruning once found a divergence, pinned in test_property_pruning_regression.py.
    pytest.param(True, id="prune"),
])
@settings(settings.get_profile(f"oversync-{PROFILE.name}"))
@given(script=scripts, faults=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_devices_converge_on_the_server_and_the_oracle(
    live_server: tuple[ServerProcess, str], tmp_path: Path, prune: bool, script: list[Op],
    faults: bool, seed: int,
) -> None:
    server, url = live_server
    workdir = tmp_path / uuid.uuid4().hex[:8]
    workdir.mkdir()
    started = time.monotonic()
    if os.environ.get("OVERSYNC_PROPERTY_VERBOSE"):
        print(f"--- faults={faults} seed={seed}", *script, sep="\n  ")
    sim = asyncio.run(run_script(server, url, workdir, script, faults, seed, prune))
    summary = (
        f"{len(script)} ops, faults={faults}, {len(sim.injector.log)} faults injected, "
        f"{sim.acks} acks, {len(sim.contested)} contested, {len(sim.errors)} recoverable"
        f" errors, {sum(len(t) for t in sim.model[sim.users[0]].values())} rows,"
        f" {time.monotonic() - started:.1f}s"
    )
    note(summary)
    if os.environ.get("OVERSYNC_PROPERTY_VERBOSE"):
        print(summary, sim.errors[:3])
    assert server.proc.poll() is None, server.tail()
