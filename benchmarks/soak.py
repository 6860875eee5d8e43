"""Soak: many real clients against several server workers over one PostgreSQL, for minutes.

``python -m benchmarks.soak --clients 100 --duration 300 --workers 2``

* **Servers**: ``--workers`` single-worker reference servers (:class:`~benchmarks._servers.
  ServerFleet`, one port each, one database), so every device is pinned to a known worker.
* **Devices**: ``--clients`` real :class:`~oversync_sa.client.SyncClient`\\ s, each over its own
  SQLite file in a temp dir, two per user (``--clients // 2`` users). A user's two devices sit
  on different workers. Each loops until the deadline: 1-3 random writes to ``users`` (insert a
  new row, or rename one of the user's rows - concurrent renames conflict and are resolved by the
  default server-wins resolver), ``sync()`` (push, then pull), then a random think time.
* **Watchers**: every third device also holds a ``GET /sync/watch`` stream on its own worker;
  a wake-up makes it sync early. Events name the committing source, so wake-ups are counted by
  cause: the watcher's own commit, another device on the same worker, or a commit on *another*
  worker (delivered across processes by LISTEN/NOTIFY: cross-worker).
* **Sampling** every few seconds: RSS of each worker process and PostgreSQL connections of the
  database by state (``pg_stat_activity``).
* **At the end**: every device syncs twice (push everything, then pull everything), and each
  device's ``users`` must equal the server's rows of its user (convergence).

Reported: syncs, errors (any exception of a device's write or sync; must be 0), RSS per worker
(flat = the last third's average within 15 % of the first third's, after a warm-up of the first
20 % of samples), connection counts over time, wake-ups (same / cross worker) and convergence.
The process exits 1 when there were errors or a device did not converge.

``python -m benchmarks --soak`` runs it too (duration scaled by ``--scale``, at least 20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks._harness import BenchContext, Measurement, percentile, run_standalone
from benchmarks._servers import ServerFleet
from examples.business_models import REGISTER_ORDER, BusinessBase
from oversync_sa.client import ClientConfig, SyncClient, SyncTable
from oversync_sa.metadata import client_projection
from oversync_sa.testing import asyncpg_dsn

__all__ = ["OPT_IN", "SoakMeasurement", "SoakSettings", "main", "run", "soak"]

#: Not part of a plain ``python -m benchmarks``: five minutes is asked for (``--soak``).
OPT_IN: Final = True
NAME: Final = "soak"
SCHEMA: Final = "business"
RSS_FLAT_TOLERANCE: Final = 0.15
WARM_UP_FRACTION: Final = 0.2
#: Demo tokens live 300 s; sign in again well before that.
TOKEN_REFRESH_SECONDS: Final = 200.0
_INSERT: Final = "INSERT INTO users (id, name, email) VALUES (?, ?, ?)"
_RENAME: Final = "UPDATE users SET name = ? WHERE id = ?"


@dataclass(frozen=True)
class SoakSettings:
    clients: int = 100
    duration: float = 300.0
    workers: int = 2
    think_min: float = 0.5
    think_max: float = 2.0
    sample_every: float = 5.0
    seed: int = 1


# ------------------------------------------------------------------------------- devices


class _Tokens:
    """Demo tokens per (worker, user), refreshed before they expire."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self._clients = clients
        self._cache: dict[tuple[int, str], tuple[str, float]] = {}

    async def get(self, worker: int, user: str) -> str:
        cached = self._cache.get((worker, user))
        if cached is not None and time.monotonic() - cached[1] < TOKEN_REFRESH_SECONDS:
            return cached[0]
        resp = await self._clients[worker].post(
            "/dummy-signin", json={"user": user, "password": "x"}
        )
        resp.raise_for_status()
        token = str(resp.json()["token"])
        self._cache[(worker, user)] = (token, time.monotonic())
        return token


@dataclass
class _Device:
    index: int
    user: str
    worker: int
    base_url: str
    path: Path
    watcher: bool
    engine: AsyncEngine | None = None
    client: SyncClient | None = None
    own_rows: list[bytes] = field(default_factory=list)
    woken: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def c(self) -> SyncClient:
        assert self.client is not None
        return self.client

    @property
    def source_id(self) -> str:
        return self.c.runtime.source_id

    async def open(self, tokens: _Tokens) -> None:
        self.engine = create_async_engine(f"sqlite+aiosqlite:///{self.path}")
        async with self.engine.begin() as conn:
            await conn.run_sync(client_projection(BusinessBase).create_all)
        config = ClientConfig(SCHEMA, tuple(SyncTable(t, "id") for t in REGISTER_ORDER))

        async def token() -> str:
            return await tokens.get(self.worker, self.user)

        self.client = await SyncClient.create(self.engine, self.base_url, token, config)
        await self.c.open()
        for _ in range(100):
            result = await self.c.attach(self.user)
            if result.status.value != "retry_later":
                return
            await asyncio.sleep(min(max(result.retry_after, 0.05), 1.0))
        raise RuntimeError(f"device {self.index} ({self.user}) never attached")

    async def write(self, rng: random.Random) -> None:
        assert self.engine is not None
        async with self.engine.begin() as conn:
            for _ in range(rng.randint(1, 3)):
                if self.own_rows and rng.random() < 0.4:
                    # Rename any row of the user: the peer device's rows too (conflicts).
                    ids = [r[0] for r in await conn.exec_driver_sql("SELECT id FROM users")]
                    await conn.exec_driver_sql(
                        _RENAME, (f"renamed {rng.randrange(10**6)}", rng.choice(ids))
                    )
                else:
                    key = uuid.uuid4().bytes
                    n = rng.randrange(10**6)
                    await conn.exec_driver_sql(_INSERT, (key, f"soak {n}", f"s{n}@example.com"))
                    self.own_rows.append(key)

    async def rows(self) -> set[tuple[str, str, str]]:
        assert self.engine is not None
        async with self.engine.connect() as conn:
            found: list[Any] = list(await conn.exec_driver_sql("SELECT id, name, email FROM users"))
            return {(str(uuid.UUID(bytes=bytes(r[0]))), str(r[1]), str(r[2])) for r in found}

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.engine is not None:
            await self.engine.dispose()


# ----------------------------------------------------------------------------- the run


@dataclass
class _Counters:
    syncs: int = 0
    writes: int = 0
    sync_seconds: list[float] = field(default_factory=list)
    #: CPU time of each worker process, and of this (client) process, over the loop phase.
    server_cpu_seconds: list[float] = field(default_factory=list)
    client_cpu_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    own_wakes: int = 0
    same_worker_wakes: int = 0
    cross_worker_wakes: int = 0
    catch_up_wakes: int = 0
    watch_reconnects: int = 0


async def _device_loop(
    device: _Device, counters: _Counters, deadline: float, settings: SoakSettings
) -> None:
    rng = random.Random(settings.seed * 100_003 + device.index)
    while time.monotonic() < deadline:
        try:
            await device.write(rng)
            counters.writes += 1
            started = time.perf_counter()
            await device.c.sync()
            counters.sync_seconds.append(time.perf_counter() - started)
            counters.syncs += 1
        except Exception as exc:  # every failure is a finding; the loop goes on
            counters.errors.append(f"device {device.index}: {type(exc).__name__}: {exc}")
        device.woken.clear()
        think = rng.uniform(settings.think_min, settings.think_max)
        pause = max(0.0, min(think, deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(device.woken.wait(), pause)


async def _watch(
    device: _Device, tokens: _Tokens, workers_of: dict[str, int], counters: _Counters,
    stop: asyncio.Event,
) -> None:
    """One SSE stream on the device's worker, reopened until ``stop``; counts wake-ups."""
    async with httpx.AsyncClient(base_url=device.base_url, timeout=None) as http:
        after = 0
        while not stop.is_set():
            headers = {
                "Authorization": f"Bearer {await tokens.get(device.worker, device.user)}",
                "Oversync-Source-ID": device.source_id,
            }
            try:
                async with http.stream(
                    "GET", "/sync/watch", params={"after_bundle_seq": str(after)}, headers=headers
                ) as response:
                    if response.status_code != 200:
                        raise RuntimeError(f"watch answered {response.status_code}")
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        event = json.loads(line.partition(":")[2])
                        after = max(after, int(event["bundle_seq"]))
                        source = event.get("source_id")
                        if source is None:
                            counters.catch_up_wakes += 1
                        elif source == device.source_id:
                            counters.own_wakes += 1
                        elif workers_of.get(source, device.worker) != device.worker:
                            counters.cross_worker_wakes += 1
                        else:
                            counters.same_worker_wakes += 1
                        device.woken.set()
            except (httpx.HTTPError, RuntimeError) as exc:
                if stop.is_set():
                    return
                counters.errors.append(f"watch {device.index}: {type(exc).__name__}: {exc}")
            if not stop.is_set():
                counters.watch_reconnects += 1
                await asyncio.sleep(0.5)


@dataclass
class _Sample:
    at: float
    rss_kib: list[int]
    connections: dict[str, int]


async def _sampler(
    fleet: ServerFleet, database_url: str, every: float, stop: asyncio.Event, out: list[_Sample]
) -> None:
    dbname = database_url.rsplit("/", 1)[1].split("?", 1)[0]
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    started = time.monotonic()
    try:
        while True:
            rows = await conn.fetch(
                "SELECT coalesce(state, 'none') AS state, count(*) AS n FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid() GROUP BY 1",
                dbname,
            )
            out.append(
                _Sample(
                    at=time.monotonic() - started,
                    rss_kib=fleet.rss_by_worker_kib(),
                    connections={str(r["state"]): int(r["n"]) for r in rows},
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if stop.is_set():
                return
    finally:
        await conn.close()


async def _server_rows(database_url: str, user: str) -> set[tuple[str, str, str]]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        found = await conn.fetch(
            f"SELECT id::text AS id, name, email FROM {SCHEMA}.users WHERE _sync_scope_id = $1",
            user,
        )
    finally:
        await conn.close()
    return {(r["id"], r["name"], r["email"]) for r in found}


async def _converge(devices: list[_Device], database_url: str, counters: _Counters) -> list[str]:
    """Two sync rounds (push all, then pull all), then compare every device with the server."""
    for round_no in (1, 2):
        for device in devices:
            try:
                await device.c.sync()
            except Exception as exc:
                counters.errors.append(
                    f"final sync {round_no}, device {device.index}: {type(exc).__name__}: {exc}"
                )
    mismatches = []
    for device in devices:
        local, server = await device.rows(), await _server_rows(database_url, device.user)
        if local != server:
            mismatches.append(
                f"device {device.index} ({device.user}): {len(local)} local rows, "
                f"{len(server)} on the server, {len(local ^ server)} differ"
            )
    return mismatches


@dataclass
class SoakResult:
    settings: SoakSettings
    seconds: float
    counters: _Counters
    samples: list[_Sample]
    mismatches: list[str]
    devices: int
    rows_on_server: int

    def rss_series(self) -> list[dict[str, Any]]:
        """Per worker: first/last-third averages after warm-up, min, max, and the verdict."""
        usable = self.samples[int(len(self.samples) * WARM_UP_FRACTION):]
        third = max(1, len(usable) // 3)
        series = []
        for worker in range(self.settings.workers):
            values = [s.rss_kib[worker] for s in usable if s.rss_kib[worker] > 0]
            first = sum(values[:third]) / max(1, len(values[:third]))
            last = sum(values[-third:]) / max(1, len(values[-third:]))
            series.append({
                "worker": worker,
                "samples": len(values),
                "first_third_mib": round(first / 1024, 1),
                "last_third_mib": round(last / 1024, 1),
                "min_mib": round(min(values, default=0) / 1024, 1),
                "max_mib": round(max(values, default=0) / 1024, 1),
                "growth": round(last / first - 1, 4) if first else None,
                "flat": bool(first) and last <= first * (1 + RSS_FLAT_TOLERANCE),
            })
        return series

    def connection_series(self) -> dict[str, Any]:
        totals = [sum(s.connections.values()) for s in self.samples]
        return {
            "min": min(totals, default=0),
            "max": max(totals, default=0),
            "last": totals[-1] if totals else 0,
            "by_state_last": self.samples[-1].connections if self.samples else {},
            "over_time": _thin([(s.at, sum(s.connections.values())) for s in self.samples]),
        }

    def rss_over_time_mib(self, worker: int) -> list[tuple[float, float]]:
        return _thin([(s.at, round(s.rss_kib[worker] / 1024, 1)) for s in self.samples])

    @property
    def converged(self) -> bool:
        return not self.mismatches

    def as_dict(self) -> dict[str, Any]:
        c = self.counters
        return {
            "settings": self.settings.__dict__,
            "seconds": round(self.seconds, 2),
            "devices": self.devices,
            "syncs": c.syncs,
            "writes": c.writes,
            "sync_seconds": {
                "p50": round(percentile(c.sync_seconds, 0.5), 4),
                "p99": round(percentile(c.sync_seconds, 0.99), 4),
                "max": round(max(c.sync_seconds, default=0.0), 4),
            },
            "errors": len(c.errors),
            "error_examples": c.errors[:10],
            "wakes": {
                "own_commits": c.own_wakes,
                "same_worker": c.same_worker_wakes,
                "cross_worker": c.cross_worker_wakes,
                "catch_up": c.catch_up_wakes,
                "watch_reconnects": c.watch_reconnects,
            },
            "cpu_seconds": {
                "workers": [round(v, 1) for v in c.server_cpu_seconds],
                "clients_process": round(c.client_cpu_seconds, 1),
            },
            "rss": self.rss_series(),
            "rss_over_time_mib": [
                self.rss_over_time_mib(w) for w in range(self.settings.workers)
            ],
            "connections": self.connection_series(),
            "samples": [
                {"at": round(s.at, 1), "rss_kib": s.rss_kib, "connections": s.connections}
                for s in self.samples
            ],
            "converged": self.converged,
            "mismatches": self.mismatches[:10],
            "rows_on_server": self.rows_on_server,
            "load_average": os.getloadavg()[0],
        }


async def soak(database_url: str, settings: SoakSettings, work: Path) -> SoakResult:
    """Run the whole soak over ``database_url`` (a fresh, empty database)."""
    pool_max = max(10, settings.clients // settings.workers // 2 + 5)
    fleet = ServerFleet(database_url, settings.workers, pool_max=pool_max)
    counters = _Counters()
    samples: list[_Sample] = []
    stop = asyncio.Event()
    http = [httpx.AsyncClient(base_url=url, timeout=30.0) for url in fleet.base_urls]
    devices: list[_Device] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await fleet.wait_ready()
        tokens = _Tokens(http)
        users = max(1, settings.clients // 2)
        for i in range(settings.clients):
            # Device i and i + users share a user and sit on different workers.
            worker = (i // users) % settings.workers
            devices.append(
                _Device(i, f"soak-user-{i % users}", worker, fleet.base_urls[worker],
                        work / f"device-{i}.db", watcher=i % 3 == 0)
            )
        # Attach in small groups: a burst of first connects only measures the initial lease.
        for start in range(0, len(devices), 10):
            await asyncio.gather(*(d.open(tokens) for d in devices[start:start + 10]))
        workers_of = {d.source_id: d.worker for d in devices}
        print(f"soak: {len(devices)} devices attached, running {settings.duration:.0f} s",
              file=sys.stderr)
        tasks.append(asyncio.create_task(
            _sampler(fleet, database_url, settings.sample_every, stop, samples)
        ))
        tasks += [
            asyncio.create_task(_watch(d, tokens, workers_of, counters, stop))
            for d in devices if d.watcher
        ]
        started = time.monotonic()
        cpu_before = [s.cpu_seconds() for s in fleet.servers], time.process_time()
        deadline = started + settings.duration
        await asyncio.gather(*(_device_loop(d, counters, deadline, settings) for d in devices))
        seconds = time.monotonic() - started
        counters.server_cpu_seconds = [
            s.cpu_seconds() - before for s, before in zip(fleet.servers, cpu_before[0], strict=True)
        ]
        counters.client_cpu_seconds = time.process_time() - cpu_before[1]
        stop.set()
        await asyncio.sleep(0)  # let the sampler take its last sample
        mismatches = await _converge(devices, database_url, counters)
        rows_on_server = 0
        for u in range(users):
            rows_on_server += len(await _server_rows(database_url, f"soak-user-{u}"))
    except BaseException:
        print(fleet.tail(), file=sys.stderr)
        raise
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for device in devices:
            with contextlib.suppress(Exception):
                await device.close()
        await asyncio.gather(*(client.aclose() for client in http))
        fleet.stop()
    return SoakResult(settings, seconds, counters, samples, mismatches, len(devices),
                      rows_on_server)


# ---------------------------------------------------------------------------------- report


def _thin(points: list[tuple[float, Any]], keep: int = 11) -> list[tuple[float, Any]]:
    """At most ``keep`` evenly spaced points of a series, first and last included."""
    if len(points) <= keep:
        return points
    step = (len(points) - 1) / (keep - 1)
    return [points[round(i * step)] for i in range(keep)]


@dataclass
class SoakMeasurement(Measurement):
    """Judged by zero errors, convergence, flat RSS and cross-worker wake-ups; no ratio."""

    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return 0.0

    @property
    def meets_target(self) -> bool:
        r = self.result
        return (
            self.skipped is None and r.get("errors") == 0 and bool(r.get("converged"))
            and all(w["flat"] for w in r.get("rss", []))
            and r.get("wakes", {}).get("cross_worker", 0) > 0
        )

    def figure_text(self) -> str:
        r = self.result
        return (
            f"{r.get('syncs', 0):,} syncs, {r.get('errors', 0)} errors, "
            f"converged={r.get('converged')}, cross-worker wakes "
            f"{r.get('wakes', {}).get('cross_worker', 0)}"
        )

    def baseline_text(self) -> str:
        return "-"

    def ratio_text(self) -> str:
        return "-"

    def target_text(self) -> str:
        return "0 errors, converged, RSS flat (15 %), cross-worker wakes > 0"


def _measurement(result: SoakResult) -> SoakMeasurement:
    data = result.as_dict()
    s = result.settings
    notes = [
        f"{result.devices} devices ({result.devices // 2} users, {s.workers} workers), "
        f"{data['syncs']:,} syncs and {data['writes']:,} write transactions in "
        f"{result.seconds:.0f} s; {data['rows_on_server']:,} users rows on the server",
        f"sync() duration p50 {data['sync_seconds']['p50'] * 1000:,.0f} ms, p99 "
        f"{data['sync_seconds']['p99'] * 1000:,.0f} ms, max "
        f"{data['sync_seconds']['max'] * 1000:,.0f} ms",
        f"CPU over the loop phase: workers {data['cpu_seconds']['workers']} s, the client "
        f"process (all {result.devices} SyncClients and their SQLite threads) "
        f"{data['cpu_seconds']['clients_process']} s",
        f"errors: {data['errors']}; converged: {data['converged']}",
        f"watch wake-ups: by the device's own commits {data['wakes']['own_commits']}, by "
        f"another device on the same worker {data['wakes']['same_worker']}, cross worker "
        f"{data['wakes']['cross_worker']}, catch-up {data['wakes']['catch_up']}, "
        f"stream reconnects {data['wakes']['watch_reconnects']}",
        *[
            f"worker {w['worker']} RSS after warm-up: first third {w['first_third_mib']} MiB, "
            f"last third {w['last_third_mib']} MiB (min {w['min_mib']}, max {w['max_mib']}, "
            f"{w['samples']} samples after warm-up): {'flat' if w['flat'] else 'GROWING'}"
            for w in data["rss"]
        ],
        *[
            f"worker {w} RSS over time (s: MiB): "
            + ", ".join(f"{at:.0f}: {mib}" for at, mib in series)
            for w, series in enumerate(data["rss_over_time_mib"])
        ],
        f"PostgreSQL connections of the database: min {data['connections']['min']}, max "
        f"{data['connections']['max']}, last sample {data['connections']['by_state_last']}; "
        "over time (s: count): "
        + ", ".join(f"{at:.0f}: {n}" for at, n in data["connections"]["over_time"]),
        f"1-min load average at the end {data['load_average']:.1f} on {os.cpu_count()} CPUs",
        *[f"error: {e}" for e in data["error_examples"][:5]],
        *[f"mismatch: {m}" for m in data["mismatches"][:5]],
    ]
    return SoakMeasurement(
        benchmark=NAME,
        name=f"{result.devices} clients, {s.duration:.0f} s, {s.workers} workers",
        rows=max(1, data["syncs"]),
        seconds=result.seconds,
        baseline="none (judged by errors, convergence, RSS and wake-ups)",
        baseline_seconds=0.0,
        target_ratio=0.0,
        notes=notes,
        result=data,
    )


async def measure(ctx: BenchContext, settings: SoakSettings) -> SoakMeasurement:
    database_url = ctx.server.create_database()
    try:
        with tempfile.TemporaryDirectory(prefix="oversync-soak-") as tmp:
            result = await soak(database_url, settings, Path(tmp))
    finally:
        ctx.server.drop_database(database_url)
    return _measurement(result)


async def run(ctx: BenchContext) -> list[Measurement]:
    """``python -m benchmarks --soak``: the default soak, its duration scaled."""
    settings = SoakSettings(
        clients=ctx.size(100, minimum=6), duration=max(20.0, 300.0 * ctx.scale)
    )
    return [await measure(ctx, settings)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).with_name("results-soak.json"))
    args = parser.parse_args(argv)
    if args.clients < 2 or args.workers < 1:
        parser.error("--clients must be >= 2 and --workers >= 1")
    settings = SoakSettings(
        clients=args.clients, duration=args.duration, workers=args.workers,
        sample_every=args.sample_every, seed=args.seed,
    )
    lines: list[SoakMeasurement] = []

    async def one(ctx: BenchContext) -> list[Measurement]:
        lines.append(await measure(ctx, settings))
        return list(lines)

    code = run_standalone(one, output=args.output)
    return code if lines and lines[0].result["errors"] == 0 and lines[0].result["converged"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
