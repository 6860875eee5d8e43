"""HTTP load: the reference server under 50 concurrent simulated devices (issue 4).

The reference server (``python -m examples.litestar_server``: uvicorn, one process) runs on
loopback over a database of its own from the harness's PostgreSQL. 50 devices (httpx async
clients in this process; two devices per user, so pulls bring the other device's bundles) each
sign in (``/dummy-signin``), connect, then loop a bounded number of times: push a few rows
(create session, one chunk, commit) and pull. Printed: requests/s over the loop phase, p50/p99
latency of push commit and of pull, the error count (any unexpected status or transport error)
and the server's RSS. Target: p99 push commit < 250 ms with no errors.

The baseline is ``GET /syncx/health`` (one status query against PostgreSQL) sent by the same
devices at the same concurrency, the same number of times: the cost of a request through uvicorn,
Litestar and the pool, without the protocol. The table's ratio is requests/s against that.

Under ``--scale`` the device count and the loop count shrink (at least 2 each).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from benchmarks._harness import BenchContext, Measurement, Stage

NAME: Final = "http"
DEVICES: Final = 50
DEVICES_PER_USER: Final = 2
LOOPS: Final = 20
ROWS_PER_PUSH: Final = 5
#: Hard bound of the loop phase, whatever the loop count.
MAX_LOOP_SECONDS: Final = 180.0
P99_COMMIT_TARGET: Final = 0.250
REPO_ROOT: Final = Path(__file__).resolve().parents[1]
JWT_SECRET: Final = "http-load-benchmark-secret-of-32-bytes"
_READY_SECONDS: Final = 60.0


# ------------------------------------------------------------------------------ the server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_status_kib(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class _Server:
    """The reference server as a child process on loopback; its log goes to a temp file."""

    def __init__(self, database_url: str, pool_max: int) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="http_load_server_", suffix=".log")[1])
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "JWT_SECRET": JWT_SECRET,
            "OVERSYNC_DB_POOL_MAX_CONNS": str(pool_max),
            "OVERSYNC_DB_POOL_MIN_CONNS": "5",
            "PYTHONPATH": str(REPO_ROOT),
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "examples.litestar_server"],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_SECONDS
        async with httpx.AsyncClient(base_url=self.base_url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.tail()}")
                try:
                    if (await client.get("/syncx/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"server not ready after {_READY_SECONDS:.0f} s:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # utime and stime are fields 14 and 15 of stat(5), i.e. 12 and 13 after the name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        return _proc_status_kib(self.proc.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return _proc_status_kib(self.proc.pid, "VmHWM")

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the devices


@dataclass
class _Stats:
    """Latencies (seconds) per operation, request and error counts of one phase."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    requests: int = 0
    errors: list[str] = field(default_factory=list)

    async def timed(
        self, name: str, call: Callable[[], Awaitable[httpx.Response]], expected: int = 200
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await call()
        except httpx.HTTPError as exc:
            self.requests += 1
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return None
        self.latencies.setdefault(name, []).append(time.perf_counter() - started)
        self.requests += 1
        if response.status_code != expected:
            self.errors.append(f"{name}: {response.status_code} {response.text[:200]}")
            return None
        return response


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class _Device:
    index: int
    client: httpx.AsyncClient
    headers: dict[str, str] = field(default_factory=dict)
    next_bundle_id: int = 1
    checkpoint: int = 0

    @property
    def user(self) -> str:
        return f"load-user-{self.index // DEVICES_PER_USER}"

    @property
    def source(self) -> str:
        return f"load-device-{self.index}"

    async def sign_in_and_connect(self, stats: _Stats) -> bool:
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

    async def push(self, stats: _Stats) -> bool:
        create = await stats.timed(
            "push create",
            lambda: self.client.post(
                "/sync/push-sessions",
                json={"source_bundle_id": self.next_bundle_id, "planned_row_count": ROWS_PER_PUSH},
                headers=self.headers,
            ),
        )
        if create is None:
            return False
        push_id = create.json()["push_id"]
        rows = [_user_row(str(uuid.uuid4()), n) for n in range(ROWS_PER_PUSH)]
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
        return True

    async def pull(self, stats: _Stats) -> None:
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

    async def loop(self, stats: _Stats, loops: int, deadline: float) -> None:
        for _ in range(loops):
            if time.monotonic() > deadline:
                return
            if not await self.push(stats):
                return  # the device's sequence is unknown after a failed push; stop it
            await self.pull(stats)

    async def health(self, stats: _Stats, count: int) -> None:
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
    seconds: float
    requests: int
    errors: list[str]
    latencies: dict[str, list[float]]
    baseline_seconds: float
    baseline_requests: int
    baseline_errors: list[str]
    server_rss_before_kib: int
    server_rss_after_kib: int
    server_peak_rss_kib: int
    server_cpu_seconds: float
    load_average: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def p(self, name: str, fraction: float) -> float:
        return _percentile(self.latencies.get(name, []), fraction)


async def run_load(base_url: str, server: _Server, devices: int, loops: int) -> LoadResult:
    """Sign in and connect every device, run the loops concurrently, then the baseline."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) for _ in range(devices)
    ]
    try:
        fleet = [_Device(i, client) for i, client in enumerate(clients)]
        setup = _Stats()
        attached = await asyncio.gather(*(d.sign_in_and_connect(setup) for d in fleet))
        if not all(attached):
            raise RuntimeError(f"devices could not attach: {setup.errors[:5]}")

        rss_before, cpu_before = server.rss_kib(), server.cpu_seconds()
        stats = _Stats()
        started = time.perf_counter()
        deadline = time.monotonic() + MAX_LOOP_SECONDS
        await asyncio.gather(*(d.loop(stats, loops, deadline) for d in fleet))
        seconds = time.perf_counter() - started
        rss_after, peak = server.rss_kib(), server.peak_rss_kib()
        server_cpu = server.cpu_seconds() - cpu_before

        baseline = _Stats()
        per_device = max(1, stats.requests // devices)
        base_started = time.perf_counter()
        await asyncio.gather(*(d.health(baseline, per_device) for d in fleet))
        baseline_seconds = time.perf_counter() - base_started
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return LoadResult(
        devices=devices,
        loops=loops,
        seconds=seconds,
        requests=stats.requests,
        errors=stats.errors,
        latencies=stats.latencies,
        baseline_seconds=baseline_seconds,
        baseline_requests=baseline.requests,
        baseline_errors=baseline.errors,
        server_rss_before_kib=rss_before,
        server_rss_after_kib=rss_after,
        server_peak_rss_kib=peak,
        server_cpu_seconds=server_cpu,
        load_average=os.getloadavg()[0],
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _measurement(result: LoadResult) -> Measurement:
    p99_commit = result.p("push commit", 0.99)
    met = p99_commit < P99_COMMIT_TARGET and not result.errors
    # The baseline line is the same number of health requests; scale its time to the same
    # request count so the ratio compares rates.
    baseline_seconds = result.baseline_seconds * result.requests / max(1, result.baseline_requests)
    notes = [
        f"{result.devices} devices x {result.loops} loops of push ({ROWS_PER_PUSH} rows: "
        f"create + chunk + commit) and pull: {result.requests:,} requests in "
        f"{result.seconds:.2f} s = {result.requests_per_second:,.0f} requests/s",
        f"push commit p50 {_ms(result.p('push commit', 0.5))}, p99 {_ms(p99_commit)} "
        f"(target < {_ms(P99_COMMIT_TARGET)}: {'MET' if met else 'MISSED'})",
        f"pull p50 {_ms(result.p('pull', 0.5))}, p99 {_ms(result.p('pull', 0.99))}",
        f"push create p50 {_ms(result.p('push create', 0.5))}, p99 "
        f"{_ms(result.p('push create', 0.99))}; push chunk p50 "
        f"{_ms(result.p('push chunk', 0.5))}, p99 {_ms(result.p('push chunk', 0.99))}",
        f"errors: {len(result.errors)} (baseline: {len(result.baseline_errors)})",
        f"server process CPU {result.server_cpu_seconds:.1f} s over the loops "
        f"({1000 * result.server_cpu_seconds / max(1, result.requests):.1f} ms per request); "
        f"1-min load average at the end {result.load_average:.1f} on {os.cpu_count()} CPUs",
        f"server RSS {result.server_rss_before_kib / 1024:.1f} MiB before the loops, "
        f"{result.server_rss_after_kib / 1024:.1f} MiB after, peak "
        f"{result.server_peak_rss_kib / 1024:.1f} MiB",
        *[f"error: {e}" for e in result.errors[:5]],
    ]
    stages = [
        Stage(f"{name} (sum of latencies)", sum(values), len(values))
        for name, values in result.latencies.items()
    ]
    return Measurement(
        benchmark=NAME,
        name=f"load ({result.devices} devices)",
        rows=result.requests,
        seconds=result.seconds,
        baseline=f"GET /syncx/health x {result.baseline_requests:,} at the same concurrency",
        baseline_seconds=baseline_seconds,
        # The goal is the p99 latency (see the notes), not a rate relative to the baseline.
        target_ratio=0.0,
        peak_rss_kib=max(0, result.server_peak_rss_kib - result.server_rss_before_kib),
        stages=stages,
        notes=notes,
    )


async def run(ctx: BenchContext) -> list[Measurement]:
    devices = ctx.size(DEVICES, minimum=2)
    loops = ctx.size(LOOPS, minimum=2)
    database_url = ctx.server.create_database()
    server = _Server(database_url, pool_max=max(10, devices))
    try:
        await server.wait_ready()
        result = await run_load(server.base_url, server, devices, loops)
    except BaseException:
        print(server.tail(), file=sys.stderr)
        raise
    finally:
        server.stop()
        ctx.server.drop_database(database_url)
    print(
        f"http_load: {result.requests} requests, {len(result.errors)} errors, "
        f"p99 commit {_ms(result.p('push commit', 0.99))}, "
        f"median {_ms(statistics.median(result.latencies.get('push commit', [0.0])))}",
        file=sys.stderr,
    )
    return [_measurement(result)]
