"""Shared benchmark machinery: PostgreSQL, timing, memory, the result table and results.json.

A benchmark module exposes ``async def run(ctx: BenchContext) -> list[Measurement]``. Each
:class:`Measurement` is one printed line: the library operation's rows/s next to a raw
PostgreSQL baseline for the *same rows in the same run*, their ratio and the target ratio.
Stage breakdowns (``stages``) are printed indented under their line.

Memory: ``peak_rss_kib`` is the growth of the process's peak RSS during the measured call
(``VmHWM`` is reset through ``/proc/self/clear_refs`` first, so every line has its own peak;
``ru_maxrss`` is the fallback where that is not possible). ``--tracemalloc`` additionally
traces Python allocations, which slows Python code down, so timings of such a run are not
comparable and the table says so.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from oversync_sa.testing import PostgresServer, find_postgres, sqlalchemy_url

__all__ = [
    "BenchContext",
    "Measurement",
    "Stage",
    "StageClock",
    "measure",
    "print_table",
    "write_results",
]

T = TypeVar("T")


@dataclass
class Stage:
    """One named part of a measured operation (seconds; ``calls`` when it ran repeatedly)."""

    name: str
    seconds: float
    calls: int = 1


@dataclass
class Measurement:
    """One result line: library rate vs. raw-PostgreSQL rate for the same rows."""

    benchmark: str
    name: str
    rows: int
    seconds: float
    baseline: str
    baseline_seconds: float
    target_ratio: float
    peak_rss_kib: int = 0
    python_peak_kib: int | None = None
    stages: list[Stage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    @property
    def baseline_rows_per_second(self) -> float:
        return self.rows / self.baseline_seconds if self.baseline_seconds > 0 else float("inf")

    @property
    def ratio(self) -> float:
        """Library rate / baseline rate (1.0 = as fast as raw PostgreSQL)."""
        return self.baseline_seconds / self.seconds if self.seconds > 0 else float("inf")

    @property
    def meets_target(self) -> bool:
        return self.ratio >= self.target_ratio

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            rows_per_second=round(self.rows_per_second, 1),
            baseline_rows_per_second=round(self.baseline_rows_per_second, 1),
            ratio=round(self.ratio, 4),
            meets_target=self.meets_target,
        )
        return data


@dataclass
class BenchContext:
    """What a benchmark gets: a PostgreSQL server, the size scale and memory options."""

    server: PostgresServer
    scale: float = 1.0
    trace_python: bool = False

    def size(self, full: int, minimum: int = 1) -> int:
        """``full`` scaled by ``--scale`` (never below ``minimum``)."""
        return max(minimum, round(full * self.scale))

    @asynccontextmanager
    async def database(self, **engine_options: Any) -> AsyncIterator[tuple[str, AsyncEngine]]:
        """A fresh database (``postgresql://`` URL) plus an asyncpg engine, both dropped after."""
        url = self.server.create_database()
        engine = create_async_engine(
            sqlalchemy_url(url), pool_size=5, max_overflow=5, **engine_options
        )
        try:
            yield url, engine
        finally:
            await engine.dispose()
            self.server.drop_database(url)


# ------------------------------------------------------------------------------ measuring


def _read_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    # Writing 5 resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def _ru_maxrss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)


@dataclass
class _Sample:
    seconds: float = 0.0
    peak_rss_kib: int = 0
    python_peak_kib: int | None = None


async def measure(
    ctx: BenchContext, operation: Callable[[], Awaitable[T]]
) -> tuple[T, _Sample]:
    """Run ``operation`` once; wall time, peak RSS growth and (optionally) Python peak."""
    sample = _Sample()
    per_call = _reset_peak_rss()
    before = _read_status_kib("VmRSS") if per_call else _ru_maxrss_kib()
    if ctx.trace_python:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        result = await operation()
    finally:
        sample.seconds = time.perf_counter() - started
        if ctx.trace_python:
            sample.python_peak_kib = tracemalloc.get_traced_memory()[1] // 1024
            tracemalloc.stop()
    after = _read_status_kib("VmHWM") if per_call else _ru_maxrss_kib()
    sample.peak_rss_kib = max(0, (after or 0) - (before or 0))
    return result, sample


class StageClock:
    """Accumulates wall time per stage name; ``with clock("apply"): ...``.

    Benchmarks wrap library functions with :meth:`wrap` to see where an operation spends its
    time without changing the code under test.
    """

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._calls: dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds
        self._calls[name] = self._calls.get(name, 0) + 1

    def wrap(self, name: str, func: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        async def timed(*args: Any, **kwargs: Any) -> T:
            with self(name):
                return await func(*args, **kwargs)

        return timed

    def get(self, name: str) -> float:
        return self._seconds.get(name, 0.0)

    def stages(self, order: list[str] | None = None) -> list[Stage]:
        names = order if order is not None else list(self._seconds)
        return [Stage(n, self._seconds.get(n, 0.0), self._calls.get(n, 0)) for n in names]


# --------------------------------------------------------------------------------- output


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value != float("inf") else "inf"


def print_table(measurements: list[Measurement], *, traced: bool, out: Any = None) -> None:
    """One line per measurement, stage breakdowns indented below it."""
    out = out or sys.stdout
    header = (
        f"{'benchmark':<38} {'rows':>8} {'seconds':>9} {'rows/s':>11} "
        f"{'baseline rows/s':>16} {'ratio':>7} {'target':>7}  {'ok':<4} {'peak RSS':>10}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for m in measurements:
        python_peak = "" if m.python_peak_kib is None else f"  py-peak {m.python_peak_kib:,} KiB"
        print(
            f"{m.benchmark + ': ' + m.name:<38} {m.rows:>8,} {m.seconds:>9.3f} "
            f"{_rate(m.rows_per_second):>11} {_rate(m.baseline_rows_per_second):>16} "
            f"{m.ratio:>7.3f} {m.target_ratio:>7.3f}  {'yes' if m.meets_target else 'NO':<4} "
            f"{m.peak_rss_kib:>7,} KiB{python_peak}",
            file=out,
        )
        print(f"    baseline: {m.baseline} ({m.baseline_seconds:.4f} s)", file=out)
        for stage in m.stages:
            share = 100.0 * stage.seconds / m.seconds if m.seconds > 0 else 0.0
            calls = f" ({stage.calls} calls)" if stage.calls != 1 else ""
            print(
                f"    - {stage.name:<52} {stage.seconds:>8.4f} s {share:>5.1f}%{calls}", file=out
            )
        for note in m.notes:
            print(f"    note: {note}", file=out)
    if traced:
        print("(tracemalloc was on: timings are slower than an untraced run)", file=out)


def write_results(
    path: Path, measurements: list[Measurement], ctx: BenchContext, server_version: str
) -> None:
    """``results.json``: environment plus every measurement with its stages."""
    payload = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "postgres": {"origin": ctx.server.origin, "version": server_version},
        "scale": ctx.scale,
        "tracemalloc": ctx.trace_python,
        "measurements": [m.as_dict() for m in measurements],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def start_postgres() -> PostgresServer:
    """The project's PostgreSQL search (``$OVERSYNC_TEST_DATABASE_URL``, initdb, wheel)."""
    return find_postgres()
