"""Server hot paths against raw PostgreSQL: push commit, pull, snapshot (issue 3).

Three lines, each beside a raw-PostgreSQL baseline over the same rows in the same run:

* **push commit** - a 10k-row push of ``business.users`` rows (create + chunks + commit through
  :mod:`oversync_sa.server.push_sessions` / :mod:`~oversync_sa.server.push_commit`), vs. COPY of
  the same rows into a plain table of the same columns (``copy_records_to_table``). Target 1/6.
* **pull** - 100k rows in 100 bundles paged through
  :func:`oversync_sa.server.pull.pull_encoded` (the page as wire JSON, what ``GET /sync/pull``
  sends), vs. one raw ``SELECT`` of the same ``bundle_rows`` (payload JSON text) through
  asyncpg. Target 1/2.
* **snapshot** - create a 100k-row snapshot session and read every chunk (as wire JSON, what
  the HTTP route sends), vs. a raw ``SELECT`` of the same business rows as payload JSON.
  Target 1/2.

The schema is the Go example's (``examples/business_models.py`` via ``server_projection``).
The push line is broken down by stage; library functions are wrapped with timers for that
(see :class:`benchmarks._harness.StageClock`) and restored afterwards. The capture-trigger
time comes from PostgreSQL's own function statistics (``track_functions = 'pl'``), read in the
commit transaction just before finalisation.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from benchmarks._harness import BenchContext, Measurement, Stage, StageClock, measure
from examples.business_models import REGISTER_ORDER, BusinessBase
from oversync_sa.metadata import server_projection
from oversync_sa.server import (
    RegisteredTable,
    ServiceConfig,
    SyncService,
    finalize as finalize_mod,
    pull as pull_mod,
    push_commit as push_commit_mod,
    writes as writes_mod,
)
from oversync_sa.server.connect import connect
from oversync_sa.server.pull import pull_encoded
from oversync_sa.server.push_commit import commit_push_session
from oversync_sa.server.push_sessions import create_push_session, upload_push_chunk
from oversync_sa.server.read_support import driver_connection
from oversync_sa.server.snapshot import create_snapshot_session, get_snapshot_chunk_encoded
from oversync_sa.server.writes import BundleWriter, ScopeManager
from oversync_sa.wire.models import (
    ConnectRequest,
    PushRequestRow,
    PushSessionChunkRequest,
    PushSessionCreateRequest,
)

NAME = "server"
PUSH_ROWS = 10_000
PULL_ROWS = 100_000
PULL_BUNDLES = 100
PULL_PAGE_BUNDLES = 10
SNAPSHOT_CHUNK_ROWS = 5_000
CHUNK_ROWS = 1_000

PUSH_TARGET = 1 / 6
READ_TARGET = 0.5

_USER_COLUMNS = ("_sync_scope_id", "id", "name", "email", "created_at", "updated_at")


@dataclass(frozen=True)
class _Actor:
    user_id: str
    source_id: str


# ------------------------------------------------------------------------------- set-up


async def _make_service(engine: AsyncEngine) -> SyncService:
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE SCHEMA business"))
        await conn.run_sync(server_projection(BusinessBase).create_all)
    tables = tuple(RegisteredTable("business", t, "id") for t in REGISTER_ORDER)
    config = ServiceConfig(
        registered_tables=tables,
        retained_bundles_per_user=1_000_000,
        max_rows_per_push_chunk=CHUNK_ROWS,
        max_rows_per_snapshot_chunk=SNAPSHOT_CHUNK_ROWS,
    )
    service = SyncService(engine, config)
    await service.bootstrap()
    return service


async def _initialize(service: SyncService, user: str, source: str) -> None:
    await connect(service, user, source, ConnectRequest(has_local_pending_rows=False))


def _user_rows(count: int, salt: int) -> list[dict[str, str]]:
    stamp = datetime(2026, 3, 24, 18, 42, 11, 120000, tzinfo=UTC).isoformat()
    return [
        {
            "id": str(uuid.UUID(int=(salt << 64) | n, version=4)),
            "name": f"User {n}",
            "email": f"user{n}@example.com",
            "created_at": stamp,
            "updated_at": stamp,
        }
        for n in range(count)
    ]


def _push_rows(rows: list[dict[str, str]]) -> list[PushRequestRow]:
    return [
        PushRequestRow(
            schema="business",
            table="users",
            key={"id": r["id"]},
            op="INSERT",
            base_row_version=0,
            payload=msgspec.Raw(msgspec.json.encode(r)),
        )
        for r in rows
    ]


# ------------------------------------------------------------------------ instrumentation


@contextmanager
def _wrapped(clock: StageClock, targets: list[tuple[ModuleType, str, str]]) -> Iterator[None]:
    """Time ``module.attr`` calls under a stage name; missing attributes are skipped."""
    saved: list[tuple[ModuleType, str, Any]] = []
    for module, attr, stage in targets:
        original = getattr(module, attr, None)
        if original is None:
            continue
        saved.append((module, attr, original))
        setattr(module, attr, _timed(clock, stage, original))
    try:
        yield
    finally:
        for module, attr, original in reversed(saved):
            setattr(module, attr, original)


def _timed(clock: StageClock, stage: str, func: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(func):
        return clock.wrap(stage, func)

    def timed(*args: Any, **kwargs: Any) -> Any:
        with clock(stage):
            return func(*args, **kwargs)

    return timed


_TRIGGER_TIME_SQL = sa.text(
    "SELECT coalesce(sum(pg_stat_get_xact_function_total_time(p.oid)), 0) "
    "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname = 'sync' AND p.prorettype = 'trigger'::regtype"
)


def _trigger_probe(
    clock: StageClock, finalize: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """Before finalising, record the sync trigger functions' time in this transaction (ms)."""

    async def probed(conn: AsyncConnection, *args: Any, **kwargs: Any) -> Any:
        millis = float((await conn.execute(_TRIGGER_TIME_SQL)).scalar_one())
        clock.add("trigger functions (pg stats)", millis / 1000.0)
        return await finalize(conn, *args, **kwargs)

    return probed


# ------------------------------------------------------------------------------------ push


async def _push(service: SyncService, user: str, source: str, rows: list[PushRequestRow],
                clock: StageClock) -> None:
    with clock("create session"):
        created = await create_push_session(
            service, user, source,
            PushSessionCreateRequest(source_bundle_id=1, planned_row_count=len(rows)),
        )
    for start in range(0, len(rows), CHUNK_ROWS):
        with clock("chunk staging"):
            await upload_push_chunk(
                service, user, source, created.push_id,
                PushSessionChunkRequest(start_row_ordinal=start,
                                        rows=rows[start:start + CHUNK_ROWS]),
            )
    with clock("commit"):
        response = await commit_push_session(service, user, source, created.push_id)
    assert response.row_count == len(rows), response


_PUSH_STAGES = [
    ("create session", "create session"),
    ("chunk staging", "chunk staging"),
    ("commit: load session + staged rows + row state (one query), conflict check", "load+check"),
    ("commit: apply (business INSERTs incl. triggers)", "apply"),
    ("  of which capture + owner-guard triggers", "trigger functions (pg stats)"),
    ("commit: finalize: load stage (normalised)", "finalize: load stage"),
    ("commit: finalize: build rows + hash (Python)", "finalize: build rows + hash"),
    ("commit: finalize: bundle_log/bundle_rows/row_state, source activation, retention,"
     " notify (one statement)", "finalize: writes"),
    ("commit: rest (session, locks, context, COMMIT)", "commit rest"),
]


def _push_stages(clock: StageClock) -> list[Stage]:
    finalize_total = clock.get("finalize")
    load = clock.get("finalize: load stage")
    build = clock.get("finalize: build rows + hash")
    clock.add("finalize: writes", max(0.0, finalize_total - load - build))
    accounted = sum(
        clock.get(k)
        for k in ("load+check", "apply", "finalize")
    )
    clock.add("commit rest", max(0.0, clock.get("commit") - accounted))
    stages = clock.stages([key for _, key in _PUSH_STAGES])
    for stage, (label, _) in zip(stages, _PUSH_STAGES, strict=True):
        stage.name = label
    return stages


async def _bench_push(ctx: BenchContext, service: SyncService, url: str) -> Measurement:
    count = ctx.size(PUSH_ROWS)
    user, source = "pusher", "device-1"
    await _initialize(service, user, source)
    data = _user_rows(count, salt=1)
    rows = _push_rows(data)

    clock = StageClock()
    targets = [
        (push_commit_mod, "_load_staged_rows", "load+check"),
        (push_commit_mod, "_raise_on_conflict", "load+check"),
        (push_commit_mod, "apply_staged_rows", "apply"),
        # finalize internals (names of the current implementation)
        (finalize_mod, "_load_stage", "finalize: load stage"),
        (finalize_mod, "_build_bundle", "finalize: build rows + hash"),
    ]
    with _wrapped(clock, targets):
        # writes imported finalize_bundle by name; patch that reference (restored below).
        original_finalize = getattr(writes_mod, "finalize_bundle")  # noqa: B009
        probed = clock.wrap("finalize", _trigger_probe(clock, original_finalize))
        setattr(writes_mod, "finalize_bundle", probed)  # noqa: B010
        try:
            _, sample = await measure(ctx, lambda: _push(service, user, source, rows, clock))
        finally:
            setattr(writes_mod, "finalize_bundle", original_finalize)  # noqa: B010

    baseline = await _copy_baseline(ctx, service.engine, data, user)
    notes = []
    if clock.get("trigger functions (pg stats)") == 0.0:
        notes.append("trigger time unavailable (track_functions could not be enabled)")
    return Measurement(
        benchmark=NAME, name=f"push commit ({count:,} rows)", rows=count,
        seconds=sample.seconds, baseline="COPY of the same rows into a plain table",
        baseline_seconds=baseline, target_ratio=PUSH_TARGET,
        peak_rss_kib=sample.peak_rss_kib, python_peak_kib=sample.python_peak_kib,
        stages=_push_stages(clock), notes=notes,
    )


async def _copy_baseline(
    ctx: BenchContext, engine: AsyncEngine, data: list[dict[str, str]], user: str
) -> float:
    async with engine.begin() as conn:
        await conn.execute(sa.text(
            "CREATE TABLE public.bench_users_plain (_sync_scope_id text, id uuid, name text, "
            "email text, created_at timestamptz, updated_at timestamptz)"
        ))
    records = [
        (user, uuid.UUID(r["id"]), r["name"], r["email"],
         datetime.fromisoformat(r["created_at"]), datetime.fromisoformat(r["updated_at"]))
        for r in data
    ]

    async def copy() -> None:
        async with engine.begin() as conn:
            raw = await driver_connection_started(conn)
            await raw.copy_records_to_table(
                "bench_users_plain", schema_name="public", records=records, columns=_USER_COLUMNS
            )

    _, sample = await measure(ctx, copy)
    return sample.seconds


async def driver_connection_started(conn: AsyncConnection) -> Any:
    await conn.execute(sa.text("SELECT 1"))
    return await driver_connection(conn)


# ------------------------------------------------------------------------------- pull, snapshot


async def _make_bundles(service: SyncService, user: str, rows: int, bundles: int) -> None:
    per_bundle = max(1, rows // bundles)
    manager = ScopeManager(service)
    for n in range(bundles):
        start = n * per_bundle

        async def write(writer: BundleWriter, start: int = start) -> None:
            await writer.connection.execute(
                sa.text(
                    "INSERT INTO business.users (id, name, email, created_at, updated_at) "
                    "SELECT md5('pull' || g)::uuid, 'User ' || g, 'user' || g || '@example.com',"
                    " now(), now()"
                    " FROM generate_series(CAST(:a AS integer), CAST(:b AS integer)) AS g"
                    " ORDER BY g"
                ),
                {"a": start, "b": start + per_bundle - 1},
            )

        await manager.exec_write(user, write, writer_id="bench-writer")


async def _pull_all(service: SyncService, actor: _Actor, page_bundles: int) -> int:
    after, target, total = 0, 0, 0
    while True:
        page = await pull_encoded(service, actor, after_bundle_seq=after,
                                  max_bundles=page_bundles, target_bundle_seq=target)
        target = page.stable_bundle_seq
        total += page.row_count
        after = page.last_bundle_seq or after
        if not page.has_more:
            return total


async def _raw_fetch(engine: AsyncEngine, sql: str, *args: Any) -> int:
    async with engine.connect() as conn:
        raw = await driver_connection_started(conn)
        return len(await raw.fetch(sql, *args))


_RAW_PULL_SQL = (
    "SELECT r.bundle_seq, r.row_ordinal, r.table_id, r.key_bytes, r.op_code, "
    "r.payload_wire::text FROM sync.bundle_rows r JOIN sync.user_state u USING (user_pk) "
    "WHERE u.user_id = $1 ORDER BY r.bundle_seq, r.row_ordinal"
)
_RAW_SNAPSHOT_SQL = (
    "SELECT id, (to_jsonb(u) - '_sync_scope_id')::text FROM business.users u "
    "WHERE _sync_scope_id = $1 ORDER BY id"
)


async def _bench_reads(ctx: BenchContext, service: SyncService) -> list[Measurement]:
    rows = ctx.size(PULL_ROWS, minimum=2)
    bundles = min(rows, ctx.size(PULL_BUNDLES))
    rows = (rows // bundles) * bundles
    actor = _Actor("reader", "device-r")
    await _make_bundles(service, actor.user_id, rows, bundles)
    page = max(1, min(PULL_PAGE_BUNDLES, bundles // 10 or 1))

    pull_clock = StageClock()
    assemble = "wrap the SQL-rendered page (Python)"
    with _wrapped(pull_clock, [(pull_mod, "build_encoded_page", assemble)]):
        pulled, pull_sample = await measure(ctx, lambda: _pull_all(service, actor, page))
    pull_clock.add("rest (queries, transactions)", pull_sample.seconds - pull_clock.get(assemble))
    assert pulled == rows, (pulled, rows)
    raw_rows, raw_pull = await measure(
        ctx, lambda: _raw_fetch(service.engine, _RAW_PULL_SQL, actor.user_id)
    )
    assert raw_rows == rows

    clock = StageClock()

    async def snapshot() -> int:
        with clock("create session (materialise)"):
            session = await create_snapshot_session(service, actor)
        after, total = 0, 0
        while True:
            with clock("read chunks"):
                chunk = await get_snapshot_chunk_encoded(
                    service, actor, session.snapshot_id, after_row_ordinal=after,
                    max_rows=SNAPSHOT_CHUNK_ROWS,
                )
            total += chunk.next_row_ordinal - after
            after = chunk.next_row_ordinal
            if not chunk.has_more:
                return total

    read, snap_sample = await measure(ctx, snapshot)
    assert read == rows, (read, rows)
    raw_rows, raw_snap = await measure(
        ctx, lambda: _raw_fetch(service.engine, _RAW_SNAPSHOT_SQL, actor.user_id)
    )
    assert raw_rows == rows
    return [
        Measurement(
            benchmark=NAME, name=f"pull ({rows:,} rows, {bundles} bundles)", rows=rows,
            seconds=pull_sample.seconds,
            baseline="one raw asyncpg SELECT of the same bundle_rows (payload text)",
            baseline_seconds=raw_pull.seconds, target_ratio=READ_TARGET,
            peak_rss_kib=pull_sample.peak_rss_kib, python_peak_kib=pull_sample.python_peak_kib,
            stages=pull_clock.stages(), notes=[f"{page} bundles per pull page"],
        ),
        Measurement(
            benchmark=NAME, name=f"snapshot ({rows:,} rows)", rows=rows,
            seconds=snap_sample.seconds,
            baseline="one raw asyncpg SELECT of the same business rows as payload JSON",
            baseline_seconds=raw_snap.seconds, target_ratio=READ_TARGET,
            peak_rss_kib=snap_sample.peak_rss_kib, python_peak_kib=snap_sample.python_peak_kib,
            stages=clock.stages(),
            notes=[f"{SNAPSHOT_CHUNK_ROWS} rows per chunk"],
        ),
    ]


# ------------------------------------------------------------------------------------ entry


async def run(ctx: BenchContext) -> list[Measurement]:
    """All three lines on one fresh database."""
    async with ctx.database(connect_args={"server_settings": {"track_functions": "pl"}}) as (
        url,
        engine,
    ):
        service = await _make_service(engine)
        try:
            # Warm-up: plans, catalog caches and the first-use cost of every code path.
            warm = _Actor("warmup", "device-w")
            await _initialize(service, warm.user_id, warm.source_id)
            await _push(service, warm.user_id, warm.source_id,
                        _push_rows(_user_rows(20, salt=9)), StageClock())
            push = await _bench_push(ctx, service, url)
            reads = await _bench_reads(ctx, service)
        finally:
            await service.close()
    return [push, *reads]
