"""Run every benchmark module and print one table: ``python -m benchmarks [options]``.

Benchmark modules are discovered, not listed: every module of this package whose name does not
start with ``_`` and that defines ``async def run(ctx)`` is run, in name order. A module that sets
``OPT_IN = True`` (the soak) runs only when asked for by ``--only`` or its own flag (``--soak``).
After the detailed table comes one summary table of every line (figure, baseline, ratio,
target, verdict); both go to ``results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import pkgutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import asyncpg

from benchmarks._harness import (
    BenchContext,
    Measurement,
    print_summary,
    print_table,
    start_postgres,
    write_results,
)
from oversync_sa.testing import asyncpg_dsn

RunFunc = Callable[[BenchContext], Awaitable[list[Measurement]]]
DEFAULT_OUTPUT = Path(__file__).with_name("results.json")


def discover(only: list[str] | None = None, *, opt_in: bool = False) -> dict[str, RunFunc]:
    """Benchmark name -> ``run`` of every benchmark module (optionally only some).

    Modules with ``OPT_IN = True`` are included when named in ``only`` or when ``opt_in``.
    """
    package = Path(__file__).parent
    found: dict[str, RunFunc] = {}
    for info in sorted(pkgutil.iter_modules([str(package)]), key=lambda i: i.name):
        if info.name.startswith("_") or (only and info.name not in only):
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        if getattr(module, "OPT_IN", False) and not (opt_in or only):
            continue
        run = getattr(module, "run", None)
        if callable(run):
            found[info.name] = cast(RunFunc, run)
    return found


async def _server_version(ctx: BenchContext) -> str:
    conn = await asyncpg.connect(asyncpg_dsn(ctx.server.url))
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def _run_all(ctx: BenchContext, benchmarks: dict[str, RunFunc]) -> list[Measurement]:
    results: list[Measurement] = []
    for name, run in benchmarks.items():
        print(f"running {name} (scale {ctx.scale:g}) ...", file=sys.stderr, flush=True)
        results.extend(await run(ctx))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every benchmark size (default 1.0 = full size)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"where to write the JSON results (default {DEFAULT_OUTPUT})")
    parser.add_argument("--only", action="append", metavar="MODULE",
                        help="run only this benchmark module (repeatable)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also record Python peak allocations (slows Python code down)")
    parser.add_argument("--soak", action="store_true",
                        help="also run the soak (benchmarks.soak; 5 minutes at full scale)")
    args = parser.parse_args(argv)

    benchmarks = discover(args.only, opt_in=args.soak)
    if not benchmarks:
        parser.error("no benchmark modules found")
    server = start_postgres()
    try:
        ctx = BenchContext(server=server, scale=args.scale, trace_python=args.tracemalloc)
        version = asyncio.run(_server_version(ctx))
        print(f"PostgreSQL {version} ({server.origin})", file=sys.stderr)
        measurements = asyncio.run(_run_all(ctx, benchmarks))
    finally:
        server.stop()
    print_table(measurements, traced=args.tracemalloc)
    print_summary(measurements)
    write_results(args.output, measurements, ctx, version)
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
