"""The same HTTP push workload against our reference server and go-oversync's example server.

go-oversync is not part of this repository: the benchmark looks for a checkout at
``$OVERSYNC_GO_SRC`` (default ``/tmp/go-oversync``; never inside this repository), builds its
``examples/nethttp_server`` with the ``go`` toolchain into ``/tmp/oversync-go-bench/`` and runs
that binary. Nothing of it is copied here; without ``go`` or a checkout, or with its fixed port
8080 taken, the line says ``skipped: <reason>``.

Workload (identical for both servers, each on a fresh database of the same PostgreSQL cluster):
``DEVICES`` devices (two per user, over HTTP from this process) sign in and connect, push once
untimed (warm-up), then each pushes ``PUSHES`` bundles of ``ROWS`` ``business.users`` INSERT rows
(create session + one chunk + commit) back to back. The figure is rows committed per second of
that phase; the baseline is the go-oversync server's rate, so the ratio is ours / Go's.
Target: ours >= 1.5x go-oversync. Our server runs one worker process (Go's one process uses
every core; the notes say so).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

import httpx

from benchmarks._harness import BenchContext, Measurement, percentile, scale_main
from benchmarks._servers import (
    JWT_SECRET,
    REPO_ROOT,
    ServerProcess,
    process_cpu_seconds,
    serving,
)
from benchmarks.http_load import Device, Stats

__all__ = ["main", "run"]

NAME: Final = "go"
DEVICES: Final = 8
PUSHES: Final = 10
ROWS: Final = 100
TARGET_RATIO: Final = 1.5
GO_SRC_ENV: Final = "OVERSYNC_GO_SRC"
DEFAULT_GO_SRC: Final = Path("/tmp/go-oversync")
BUILD_DIR: Final = Path("/tmp/oversync-go-bench")
#: go-oversync's example server listens on a fixed ``:8080``.
GO_PORT: Final = 8080
_BUILD_SECONDS: Final = 900
_READY_SECONDS: Final = 60.0


class Skip(Exception):
    """The comparison cannot run here; the message says why."""


# ------------------------------------------------------------------------- go-oversync


def _go_source() -> Path:
    source = Path(os.environ.get(GO_SRC_ENV, str(DEFAULT_GO_SRC))).resolve()
    if source == REPO_ROOT or REPO_ROOT in source.parents:
        raise Skip(f"{GO_SRC_ENV}={source} is inside this repository; use a checkout outside it")
    if not (source / "examples" / "nethttp_server" / "main.go").is_file():
        raise Skip(f"no go-oversync checkout at {source} (set {GO_SRC_ENV})")
    return source


def build_go_server() -> Path:
    """Build (or reuse, ``go build`` caches) go-oversync's example server; the binary's path."""
    source = _go_source()
    go = shutil.which("go")
    if go is None:
        raise Skip("the go toolchain is not on PATH")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    binary = BUILD_DIR / "nethttp_server"
    print(f"go_compare: building {source}/examples/nethttp_server ...", file=sys.stderr)
    try:
        built = subprocess.run(
            [go, "build", "-o", str(binary), "./examples/nethttp_server"],
            cwd=source, capture_output=True, text=True, timeout=_BUILD_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired:
        raise Skip(f"go build did not finish in {_BUILD_SECONDS} s") from None
    if built.returncode != 0:
        last = (built.stderr.strip().splitlines() or ["no output"])[-1]
        raise Skip(f"go build failed: {last}")
    return binary


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class GoServer:
    """The built go-oversync example server on :8080 over ``database_url``."""

    def __init__(self, binary: Path, database_url: str, pool_max: int) -> None:
        self.base_url = f"http://127.0.0.1:{GO_PORT}"
        self.log = Path(tempfile.mkstemp(prefix="go_server_", suffix=".log")[1])
        separator = "&" if "?" in database_url else "?"
        env = {
            **os.environ,
            "DATABASE_URL": f"{database_url}{separator}sslmode=disable",
            "JWT_SECRET": JWT_SECRET,
            "OVERSYNC_DB_POOL_MAX_CONNS": str(pool_max),
            "OVERSYNC_DB_POOL_MIN_CONNS": "5",
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(binary)], cwd=BUILD_DIR, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_SECONDS
        async with httpx.AsyncClient(base_url=self.base_url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"go-oversync server exited early:\n{self.tail()}")
                try:
                    if (await client.get("/syncx/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"go-oversync server not ready:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- workload


@dataclass
class PushRun:
    """One server's result of the push phase."""

    rows: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    commit_latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


async def push_workload(
    base_url: str, devices: int, pushes: int, rows: int, cpu: Callable[[], float]
) -> PushRun:
    """Sign in, connect and warm up every device, then time ``pushes`` pushes per device."""
    clients = [httpx.AsyncClient(base_url=base_url, timeout=60.0) for _ in range(devices)]
    result = PushRun()
    try:
        fleet = [Device(i, client) for i, client in enumerate(clients)]
        setup = Stats()
        if not all(await asyncio.gather(*(d.sign_in_and_connect(setup) for d in fleet))):
            raise RuntimeError(f"devices could not attach: {setup.errors[:3]}")
        if not all(await asyncio.gather(*(d.push(setup, rows) for d in fleet))):
            raise RuntimeError(f"warm-up push failed: {setup.errors[:3]}")
        stats = Stats()

        async def loop(device: Device) -> int:
            done = 0
            for _ in range(pushes):
                if not await device.push(stats, rows):
                    break
                done += rows
            return done

        cpu_before = cpu()
        started = time.perf_counter()
        result.rows = sum(await asyncio.gather(*(loop(d) for d in fleet)))
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = cpu() - cpu_before
        result.commit_latencies = stats.latencies.get("push commit", [])
        result.errors = stats.errors
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return result


async def _push_run(
    ctx: BenchContext,
    start: Callable[[str], ServerProcess | GoServer],
    devices: int,
    pushes: int,
    rows: int,
) -> PushRun:
    async with serving(ctx.server, start) as (server, _):
        return await push_workload(server.base_url, devices, pushes, rows, server.cpu_seconds)


async def _ours(ctx: BenchContext, devices: int, pushes: int, rows: int) -> PushRun:
    start = partial(ServerProcess, pool_max=max(10, devices + 5))
    return await _push_run(ctx, start, devices, pushes, rows)


async def _go(
    ctx: BenchContext, binary: Path, devices: int, pushes: int, rows: int
) -> PushRun:
    if not _port_free(GO_PORT):
        raise Skip(f"port {GO_PORT} (go-oversync's fixed port) is in use")
    start = partial(GoServer, binary, pool_max=max(10, devices + 5))
    return await _push_run(ctx, start, devices, pushes, rows)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _describe(label: str, run: PushRun) -> str:
    return (
        f"{label}: {run.rows:,} rows in {run.seconds:.2f} s = {run.rows_per_second:,.0f} rows/s; "
        f"commit p50 {_ms(percentile(run.commit_latencies, 0.5))}, p99 "
        f"{_ms(percentile(run.commit_latencies, 0.99))}; server CPU {run.cpu_seconds:.1f} s; "
        f"errors {len(run.errors)}"
    )


async def run(ctx: BenchContext) -> list[Measurement]:
    devices = ctx.size(DEVICES, minimum=2)
    pushes = ctx.size(PUSHES, minimum=2)
    rows = ctx.size(ROWS, minimum=5)
    name = f"push vs go-oversync ({devices} dev x {pushes} x {rows} rows)"
    line = Measurement(
        benchmark=NAME, name=name, rows=devices * pushes * rows, seconds=0.0,
        baseline="go-oversync examples/nethttp_server, same workload", baseline_seconds=0.0,
        target_ratio=TARGET_RATIO,
    )
    try:
        binary = await asyncio.to_thread(build_go_server)
        ours = await _ours(ctx, devices, pushes, rows)
        go = await _go(ctx, binary, devices, pushes, rows)
    except Skip as reason:
        line.skipped = str(reason)
        print(f"go_compare: skipped: {reason}", file=sys.stderr)
        return [line]
    line.rows = ours.rows
    line.seconds = ours.seconds
    # Rows/s of both sides: scale Go's time to our row count so the ratio compares rates.
    line.baseline_seconds = ours.rows / go.rows_per_second if go.rows_per_second > 0 else 0.0
    line.notes = [
        _describe("ours (1 worker process)", ours),
        _describe("go-oversync (1 process, GOMAXPROCS = all CPUs)", go),
        f"ratio ours / go-oversync = {line.ratio:.2f} (target >= {TARGET_RATIO}); 1-min load "
        f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        *[f"error (ours): {e}" for e in ours.errors[:3]],
        *[f"error (go): {e}" for e in go.errors[:3]],
    ]
    if ours.errors or go.errors:
        line.skipped = (
            f"errors during the run (ours {len(ours.errors)}, go {len(go.errors)}); see notes"
        )
    return [line]


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.go_compare [--scale S]``: this comparison alone."""
    return scale_main(run, argv, module="go_compare", description=__doc__,
                      output=Path(__file__).with_name("results-go.json"))


if __name__ == "__main__":
    raise SystemExit(main())
