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

import argparse
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
    "LatencyMeasurement",
    "Measurement",
    "Stage",
    "StageClock",
    "measure",
    "print_summary",
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
    #: Why the line could not be measured (e.g. a missing toolchain); ``None`` when measured.
    skipped: str | None = None

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
        return self.skipped is None and self.ratio >= self.target_ratio

    def figure_text(self) -> str:
        """The line's headline figure for the summary table."""
        return f"{_rate(self.rows_per_second)} rows/s"

    def baseline_text(self) -> str:
        return f"{_rate(self.baseline_rows_per_second)} rows/s"

    def ratio_text(self) -> str:
        return f"{self.ratio:.3f}"

    def target_text(self) -> str:
        # A zero ratio target means the line is reported, not judged.
        return f"ratio >= {self.target_ratio:.3g}" if self.target_ratio > 0 else "-"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            rows_per_second=round(self.rows_per_second, 1),
            baseline_rows_per_second=round(self.baseline_rows_per_second, 1),
            ratio=round(self.ratio, 4),
            meets_target=self.meets_target,
            summary={
                "figure": self.figure_text(),
                "baseline": self.baseline_text(),
                "target": self.target_text(),
            },
        )
        return data


@dataclass
class LatencyMeasurement(Measurement):
    """A line judged by a latency percentile (and no errors) rather than by a rate ratio.

    ``rows`` counts the timed events and ``seconds`` is the phase's wall time; the baseline's
    percentiles are those of the raw mechanism measured the same way in the same run.
    """

    p50_seconds: float = 0.0
    p99_seconds: float = 0.0
    baseline_p50_seconds: float = 0.0
    baseline_p99_seconds: float = 0.0
    #: ``"p50"`` or ``"p99"``: which percentile the target applies to.
    target_percentile: str = "p99"
    target_seconds: float = 0.0
    errors: int = 0

    @property
    def ratio(self) -> float:
        """Baseline latency / library latency at the judged percentile (1.0 = as fast)."""
        ours = self._judged(self.p50_seconds, self.p99_seconds)
        raw = self._judged(self.baseline_p50_seconds, self.baseline_p99_seconds)
        if raw <= 0:
            return super().ratio  # no baseline latencies: compare rates
        return raw / ours if ours > 0 else float("inf")

    @property
    def meets_target(self) -> bool:
        ours = self._judged(self.p50_seconds, self.p99_seconds)
        return self.skipped is None and self.errors == 0 and ours < self.target_seconds

    def _judged(self, p50: float, p99: float) -> float:
        return p50 if self.target_percentile == "p50" else p99

    def figure_text(self) -> str:
        return f"p50 {_ms(self.p50_seconds)} / p99 {_ms(self.p99_seconds)}"

    def baseline_text(self) -> str:
        if self.baseline_p50_seconds <= 0:
            return f"{_rate(self.baseline_rows_per_second)} /s"
        return f"p50 {_ms(self.baseline_p50_seconds)} / p99 {_ms(self.baseline_p99_seconds)}"

    def target_text(self) -> str:
        return f"{self.target_percentile} < {_ms(self.target_seconds)}, 0 errors"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


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


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


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
        if m.skipped is not None:
            print(f"{m.benchmark + ': ' + m.name:<38} skipped: {m.skipped}", file=out)
            for note in m.notes:
                print(f"    note: {note}", file=out)
            continue
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


def print_summary(measurements: list[Measurement], *, out: Any = None) -> None:
    """One line per measurement: name, figure, baseline, ratio, target and verdict."""
    out = out or sys.stdout
    rows = [
        (
            f"{m.benchmark}: {m.name}",
            f"skipped: {m.skipped}" if m.skipped is not None else m.figure_text(),
            "" if m.skipped is not None else m.baseline_text(),
            "" if m.skipped is not None else m.ratio_text(),
            m.target_text(),
            _verdict(m),
        )
        for m in measurements
    ]
    titles = ("benchmark", "figure", "baseline", "ratio", "target", "ok")
    widths = [max(len(t), *(len(r[i]) for r in rows)) for i, t in enumerate(titles)]
    line = "  ".join(f"{t:<{w}}" for t, w in zip(titles, widths, strict=True))
    print("\nSUMMARY", file=out)
    print(line, file=out)
    print("-" * len(line), file=out)
    for row in rows:
        print("  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    judged = [m for m in measurements if m.skipped is None and m.target_text() != "-"]
    met = sum(m.meets_target for m in judged)
    print(f"{met} of {len(judged)} judged lines meet their target", file=out)


def _verdict(m: Measurement) -> str:
    if m.skipped is not None:
        return "skip"
    if m.target_text() == "-":
        return "-"  # reported, not judged
    return "ok" if m.meets_target else "\u2717"


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


def scale_main(
    run: Callable[[BenchContext], Awaitable[list[Measurement]]],
    argv: list[str] | None,
    *,
    module: str,
    description: str | None,
    output: Path,
) -> int:
    """``python -m benchmarks.<module> [--scale S] [--output PATH]``: ``run`` alone."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{module}",
                                     description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--output", type=Path, default=output)
    args = parser.parse_args(argv)
    return run_standalone(run, output=args.output, scale=args.scale)


def run_standalone(
    run: Callable[[BenchContext], Awaitable[list[Measurement]]],
    *,
    output: Path,
    scale: float = 1.0,
) -> int:
    """``python -m benchmarks.<module>``: one module's ``run`` with its own PostgreSQL."""
    import asyncio

    import asyncpg

    from oversync_sa.testing import asyncpg_dsn

    async def version(url: str) -> str:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    server = start_postgres()
    try:
        ctx = BenchContext(server=server, scale=scale)
        server_version = asyncio.run(version(server.url))
        print(f"PostgreSQL {server_version} ({server.origin})", file=sys.stderr)

        async def measured() -> list[Measurement]:
            return await run(ctx)

        measurements = asyncio.run(measured())
    finally:
        server.stop()
    print_table(measurements, traced=False)
    print_summary(measurements)
    write_results(output, measurements, ctx, server_version)
    print(f"results written to {output}")
    return 0


def start_postgres() -> PostgresServer:
    """The project's PostgreSQL search (``$OVERSYNC_TEST_DATABASE_URL``, initdb, wheel)."""
    return find_postgres()
