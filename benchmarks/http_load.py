"""HTTP load: the reference server under 50 concurrent simulated devices (issue 4).

The reference server (``python -m examples.litestar_server [--workers N]``: uvicorn, one process
or N workers behind one port) runs on loopback over a database of its own from the harness's
PostgreSQL; ``python -m benchmarks`` runs one line with 1 worker and one with 2. 50 devices
(asyncio clients in this process, one keep-alive connection each, through :mod:`._rawhttp` so
that the generator takes little CPU from the server it measures; two devices per user, so pulls
bring the other device's bundles) each sign in (``/dummy-signin``), connect, then loop a
bounded number of times: push a few rows (create session, one chunk, commit) and pull.
Printed: requests/s over the loop phase, p50/p99 latency of push commit and of pull, the error
count (any unexpected status or transport error), the server's RSS and the CPU seconds the
server and the generator used. Target: p99 push commit < 250 ms with no errors.

The baseline is ``GET /syncx/health`` (one status query against PostgreSQL) sent by the same
devices at the same concurrency, the same number of times: the cost of a request through uvicorn,
Litestar and the pool, without the protocol. The summary compares the health requests' p50/p99
with push commit's; the detailed table's ratio is requests/s against the health rate.

Under ``--scale`` the device count and the loop count shrink (at least 2 each). Alone:
``python -m benchmarks.http_load --workers 2 --devices 50 --loops 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from benchmarks._harness import (
    BenchContext,
    LatencyMeasurement,
    Measurement,
    Stage,
    percentile,
    run_standalone,
)
from benchmarks._rawhttp import RawHTTPClient, RawHTTPError, RawResponse
from benchmarks._servers import ServerProcess, serving

NAME: Final = "http"
DEVICES: Final = 50
DEVICES_PER_USER: Final = 2
LOOPS: Final = 20
ROWS_PER_PUSH: Final = 5
#: Hard bound of the loop phase, whatever the loop count.
MAX_LOOP_SECONDS: Final = 180.0
P99_COMMIT_TARGET: Final = 0.250
#: Server pool size per CPU of this machine (PostgreSQL runs on the same CPUs).
POOL_PER_CPU: Final = 4
#: ``python -m benchmarks`` runs one line per worker count; the target applies to each.
WORKER_COUNTS: Final = (1, 2)


# ----------------------------------------------------------------------------- the devices


@dataclass
class Stats:
    """Latencies (seconds) per operation, request and error counts of one phase."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    requests: int = 0
    errors: list[str] = field(default_factory=list)

    async def timed(
        self, name: str, call: Callable[[], Awaitable[RawResponse]], expected: int = 200
    ) -> RawResponse | None:
        started = time.perf_counter()
        try:
            response = await call()
        except RawHTTPError as exc:
            self.requests += 1
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return None
        self.latencies.setdefault(name, []).append(time.perf_counter() - started)
        self.requests += 1
        if response.status_code != expected:
            self.errors.append(f"{name}: {response.status_code} {response.text[:200]}")
            return None
        return response


@dataclass
class Device:
    index: int
    client: RawHTTPClient
    headers: dict[str, str] = field(default_factory=dict)
    next_bundle_id: int = 1
    checkpoint: int = 0
    #: ``bundle_seq`` of this device's last committed push (0 before the first).
    last_bundle_seq: int = 0

    @property
    def user(self) -> str:
        return f"load-user-{self.index // DEVICES_PER_USER}"

    @property
    def source(self) -> str:
        return f"load-device-{self.index}"

    async def sign_in_and_connect(self, stats: Stats) -> bool:
        signin = await stats.timed(
            "signin",
            lambda: self.client.post("/dummy-signin", json={"user": self.user, "password": "x"}),
        )
        if signin is None:
            return False
        self.headers = {
            "Authorization": f"Bearer {signin.json()['token']}",
            "Oversync-Source-ID": self.source,
        }
        for _ in range(50):
            connect = await stats.timed(
                "connect",
                lambda: self.client.post(
                    "/sync/connect", json={"has_local_pending_rows": False}, headers=self.headers
                ),
            )
            if connect is None:
                return False
            body = connect.json()
            if body["resolution"] != "retry_later":
                return True
            # The other device of this user holds the initialization; Go's client waits too.
            await asyncio.sleep(min(float(body.get("retry_after_seconds", 1)), 1.0))
        stats.errors.append(f"connect: device {self.index} never attached")
        return False

    async def push(self, stats: Stats, row_count: int = ROWS_PER_PUSH) -> bool:
        create = await stats.timed(
            "push create",
            lambda: self.client.post(
                "/sync/push-sessions",
                json={"source_bundle_id": self.next_bundle_id, "planned_row_count": row_count},
                headers=self.headers,
            ),
        )
        if create is None:
            return False
        push_id = create.json()["push_id"]
        rows = [_user_row(str(uuid.uuid4()), n) for n in range(row_count)]
        chunk = await stats.timed(
            "push chunk",
            lambda: self.client.post(
                f"/sync/push-sessions/{push_id}/chunks",
                json={"start_row_ordinal": 0, "rows": rows},
                headers=self.headers,
            ),
        )
        if chunk is None:
            return False
        commit = await stats.timed(
            "push commit",
            lambda: self.client.post(f"/sync/push-sessions/{push_id}/commit", headers=self.headers),
        )
        if commit is None:
            return False
        self.next_bundle_id += 1
        self.last_bundle_seq = int(commit.json()["bundle_seq"])
        return True

    async def pull(self, stats: Stats) -> None:
        pulled = await stats.timed(
            "pull",
            lambda: self.client.get(
                "/sync/pull",
                params={"after_bundle_seq": str(self.checkpoint)},
                headers=self.headers,
            ),
        )
        if pulled is not None:
            self.checkpoint = int(pulled.json()["stable_bundle_seq"])

    async def loop(self, stats: Stats, loops: int, deadline: float) -> None:
        for _ in range(loops):
            if time.monotonic() > deadline:
                return
            if not await self.push(stats):
                return  # the device's sequence is unknown after a failed push; stop it
            await self.pull(stats)

    async def health(self, stats: Stats, count: int) -> None:
        for _ in range(count):
            await stats.timed("health", lambda: self.client.get("/syncx/health"))


def _user_row(key: str, n: int) -> dict[str, Any]:
    return {
        "schema": "business",
        "table": "users",
        "key": {"id": key},
        "op": "INSERT",
        "base_row_version": 0,
        "payload": {"id": key, "name": f"Load {n}", "email": f"load{n}@example.com"},
    }


# ---------------------------------------------------------------------------------- the run


@dataclass
class LoadResult:
    """Everything one load run measured (also what the table line is built from)."""

    devices: int
    loops: int
    workers: int
    seconds: float
    requests: int
    errors: list[str]
    latencies: dict[str, list[float]]
    baseline_seconds: float
    baseline_requests: int
    baseline_errors: list[str]
    baseline_latencies: dict[str, list[float]]
    server_rss_before_kib: int
    server_rss_after_kib: int
    server_peak_rss_kib: int
    server_cpu_seconds: float
    generator_cpu_seconds: float
    load_average: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def p(self, name: str, fraction: float) -> float:
        return percentile(self.latencies.get(name, []), fraction)


async def run_load(
    base_url: str, server: ServerProcess, devices: int, loops: int
) -> LoadResult:
    """Sign in and connect every device, run the loops concurrently, then the baseline."""
    clients = [RawHTTPClient(base_url, timeout=30.0) for _ in range(devices)]
    try:
        fleet = [Device(i, client) for i, client in enumerate(clients)]
        setup = Stats()
        attached = await asyncio.gather(*(d.sign_in_and_connect(setup) for d in fleet))
        if not all(attached):
            raise RuntimeError(f"devices could not attach: {setup.errors[:5]}")

        rss_before, cpu_before = server.rss_kib(), server.cpu_seconds()
        generator_before = _process_cpu_seconds()
        stats = Stats()
        started = time.perf_counter()
        deadline = time.monotonic() + MAX_LOOP_SECONDS
        await asyncio.gather(*(d.loop(stats, loops, deadline) for d in fleet))
        seconds = time.perf_counter() - started
        rss_after, peak = server.rss_kib(), server.peak_rss_kib()
        server_cpu = server.cpu_seconds() - cpu_before
        generator_cpu = _process_cpu_seconds() - generator_before

        baseline = Stats()
        per_device = max(1, stats.requests // devices)
        base_started = time.perf_counter()
        await asyncio.gather(*(d.health(baseline, per_device) for d in fleet))
        baseline_seconds = time.perf_counter() - base_started
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return LoadResult(
        devices=devices,
        loops=loops,
        workers=server.workers,
        seconds=seconds,
        requests=stats.requests,
        errors=stats.errors,
        latencies=stats.latencies,
        baseline_seconds=baseline_seconds,
        baseline_requests=baseline.requests,
        baseline_errors=baseline.errors,
        baseline_latencies=baseline.latencies,
        server_rss_before_kib=rss_before,
        server_rss_after_kib=rss_after,
        server_peak_rss_kib=peak,
        server_cpu_seconds=server_cpu,
        generator_cpu_seconds=generator_cpu,
        load_average=os.getloadavg()[0],
    )


def pool_size(workers: int) -> int:
    """Connections per worker: ``POOL_PER_CPU`` per CPU in all, at least 2 per worker."""
    return max(2, POOL_PER_CPU * (os.cpu_count() or 1) // workers)


def _process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _workers_label(workers: int) -> str:
    return f"{workers} worker{'s' if workers > 1 else ''}"


def _measurement(result: LoadResult) -> LatencyMeasurement:
    p99_commit = result.p("push commit", 0.99)
    met = p99_commit < P99_COMMIT_TARGET and not result.errors
    # The baseline line is the same number of health requests; scale its time to the same
    # request count so the rates compare.
    baseline_seconds = result.baseline_seconds * result.requests / max(1, result.baseline_requests)
    health = result.baseline_latencies.get("health", [])
    notes = [
        f"{result.devices} devices x {result.loops} loops of push ({ROWS_PER_PUSH} rows: "
        f"create + chunk + commit) and pull against {_workers_label(result.workers)}: "
        f"{result.requests:,} requests in {result.seconds:.2f} s = "
        f"{result.requests_per_second:,.0f} requests/s "
        f"(health baseline {result.baseline_requests / max(result.baseline_seconds, 1e-9):,.0f}"
        " requests/s)",
        f"push commit p50 {_ms(result.p('push commit', 0.5))}, p99 {_ms(p99_commit)} "
        f"(target < {_ms(P99_COMMIT_TARGET)}: {'MET' if met else 'MISSED'})",
        f"pull p50 {_ms(result.p('pull', 0.5))}, p99 {_ms(result.p('pull', 0.99))}",
        f"push create p50 {_ms(result.p('push create', 0.5))}, p99 "
        f"{_ms(result.p('push create', 0.99))}; push chunk p50 "
        f"{_ms(result.p('push chunk', 0.5))}, p99 {_ms(result.p('push chunk', 0.99))}",
        f"errors: {len(result.errors)} (baseline: {len(result.baseline_errors)})",
        f"server CPU (all workers) {result.server_cpu_seconds:.1f} s over the loops "
        f"({1000 * result.server_cpu_seconds / max(1, result.requests):.1f} ms per request), "
        f"load generator {result.generator_cpu_seconds:.1f} s "
        f"({1000 * result.generator_cpu_seconds / max(1, result.requests):.2f} ms per request); "
        f"1-min load average at the end {result.load_average:.1f} on {os.cpu_count()} CPUs",
        f"server RSS (all workers) {result.server_rss_before_kib / 1024:.1f} MiB before the "
        f"loops, {result.server_rss_after_kib / 1024:.1f} MiB after, peak "
        f"{result.server_peak_rss_kib / 1024:.1f} MiB",
        *[f"error: {e}" for e in result.errors[:5]],
    ]
    stages = [
        Stage(f"{name} (sum of latencies)", sum(values), len(values))
        for name, values in result.latencies.items()
    ]
    return LatencyMeasurement(
        benchmark=NAME,
        name=f"load ({result.devices} devices, {_workers_label(result.workers)})",
        rows=result.requests,
        seconds=result.seconds,
        baseline=f"GET /syncx/health x {result.baseline_requests:,} at the same concurrency "
        "(its latency percentiles)",
        baseline_seconds=baseline_seconds,
        target_ratio=0.0,
        peak_rss_kib=max(0, result.server_peak_rss_kib - result.server_rss_before_kib),
        stages=stages,
        notes=notes,
        p50_seconds=result.p("push commit", 0.5),
        p99_seconds=p99_commit,
        baseline_p50_seconds=percentile(health, 0.5),
        baseline_p99_seconds=percentile(health, 0.99),
        target_percentile="p99",
        target_seconds=P99_COMMIT_TARGET,
        errors=len(result.errors),
    )


async def measure_load(
    ctx: BenchContext, devices: int, loops: int, workers: int
) -> LatencyMeasurement:
    """One load run against a fresh database and a fresh server with ``workers`` workers."""
    # The server's pools are sized for the machine, not for the device count: four PostgreSQL
    # connections per CPU in all, split over the workers (each worker is its own pool). A pool
    # per device (55 connections, as measured before) made PostgreSQL's 50 busy backends fight
    # over the 2 CPUs and halved the throughput (150 against 368 requests/s, p99 commit 1.0 s
    # against 0.42 s); requests now wait in the pool instead, where waiting costs no CPU.
    start = partial(ServerProcess, pool_max=pool_size(workers), workers=workers)
    async with serving(ctx.server, start) as (server, _):
        result = await run_load(server.base_url, server, devices, loops)
    print(
        f"http_load ({_workers_label(workers)}): {result.requests} requests, "
        f"{len(result.errors)} errors, p99 commit {_ms(result.p('push commit', 0.99))}, "
        f"median {_ms(statistics.median(result.latencies.get('push commit', [0.0])))}",
        file=sys.stderr,
    )
    return _measurement(result)


async def run(ctx: BenchContext) -> list[Measurement]:
    devices = ctx.size(DEVICES, minimum=2)
    loops = ctx.size(LOOPS, minimum=2)
    return [await measure_load(ctx, devices, loops, workers) for workers in WORKER_COUNTS]


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.http_load [--workers N] [--devices D] [--loops L]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1,
                        help="server worker processes (the server's --workers; default 1)")
    parser.add_argument("--devices", type=int, default=DEVICES)
    parser.add_argument("--loops", type=int, default=LOOPS)
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).with_name("results-http.json"))
    args = parser.parse_args(argv)

    async def one(ctx: BenchContext) -> list[Measurement]:
        return [await measure_load(ctx, args.devices, args.loops, args.workers)]

    return run_standalone(one, output=args.output)


if __name__ == "__main__":
    raise SystemExit(main())
