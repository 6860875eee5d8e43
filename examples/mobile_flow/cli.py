"""Command line of the simulator: ``python -m examples.mobile_flow --scenario=NAME``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from examples.mobile_flow.context import SCENARIOS, ScenarioSpec, SimConfig, Sizes
from examples.mobile_flow.report import ConsoleProgress, render_summary, write_html, write_json
from examples.mobile_flow.runner import ScenarioResult, Simulator
from examples.mobile_flow.scenarios import ALL, WATCH_ALL, resolve

__all__ = ["main", "parse_args", "run"]

DEFAULT_SERVER: Final = "http://127.0.0.1:8080"
#: go-oversync's default; the Python server's embedded PostgreSQL prints its own URL.
DEFAULT_DB: Final = "postgres://postgres:postgres@localhost:5432/clisync_example?sslmode=disable"


def _parallel(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 500:
        raise argparse.ArgumentTypeError("must be between 1 and 500")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.mobile_flow",
        description="Simulated SQLite devices syncing through a go-oversync compatible server, "
        "verified directly in its PostgreSQL.",
    )
    parser.add_argument(
        "--scenario",
        default="",
        help="a scenario, a comma-separated list, 'all', 'watch-all' or "
        "'everything'; omitted: interactive menu",
    )
    parser.add_argument("--server", default=DEFAULT_SERVER, help="sync server base URL")
    parser.add_argument(
        "--db",
        default=os.environ.get("MOBILE_FLOW_DB", DEFAULT_DB),
        help="the server's PostgreSQL URL, for verification",
    )
    parser.add_argument(
        "--jwt-secret",
        default=None,
        help="mint tokens locally with this HS256 secret (default: ask the server's /dummy-signin)",
    )
    parser.add_argument(
        "--parallel",
        type=_parallel,
        default=1,
        help="independent users running each scenario at once (1-500); "
        "with 'all' only complex-multi-batch runs, as in go-oversync",
    )
    parser.add_argument(
        "--cleanup",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="TRUNCATE the business and sync tables first (every run uses "
        "fresh user ids, so this is optional)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller data volumes (every effect kept)"
    )
    parser.add_argument(
        "--keep-files", "--preserve-db", action="store_true", help="keep the devices' SQLite files"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where device databases go (default: a temporary directory)",
    )
    parser.add_argument("--report-json", "--output", type=Path, default=None)
    parser.add_argument("--report-html", type=Path, default=None)
    parser.add_argument("--plain", action="store_true", help="no rich output")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def scenario_menu() -> str:
    lines = ["Available scenarios:"]
    for i, spec in enumerate(resolve("everything"), start=1):
        lines.append(f"{i:>3}. {spec.name:<34} {spec.description}")
    lines.append(f"{len(SCENARIOS) + 1:>3}. {'watch-all':<34} the {len(WATCH_ALL)} watch scenarios")
    lines.append(f"{len(SCENARIOS) + 2:>3}. {'all':<34} the {len(ALL)} core scenarios")
    return "\n".join(lines)


def _choose_interactively() -> str | None:
    print(scenario_menu())
    names = [spec.name for spec in resolve("everything")] + ["watch-all", "all"]
    while True:
        try:
            answer = input(f"Select scenario (1-{len(names)}, name, or q): ").strip()
        except EOFError:
            return None
        if answer.lower() in ("q", "quit", "exit", ""):
            return None
        if answer.isdigit() and 1 <= int(answer) <= len(names):
            return names[int(answer) - 1]
        if answer in names:
            return answer
        print(f"unknown choice {answer!r}")


async def run(
    config: SimConfig,
    specs: list[ScenarioSpec],
    *,
    parallel: int = 1,
    cleanup: bool = False,
    progress: ConsoleProgress | None = None,
) -> list[ScenarioResult]:
    """Run ``specs`` against ``config``'s server; the library entry point of the CLI and demo."""
    progress = progress or ConsoleProgress()
    async with Simulator(config, progress) as sim:
        if cleanup:
            emptied = await sim.cleanup_server()
            progress.step("cleanup", f"emptied {len(emptied)} tables")
        return await sim.run(specs, parallel=parallel)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    choice = args.scenario
    if not choice:
        if not sys.stdin.isatty():
            print(scenario_menu())
            print("\nno --scenario given and stdin is not a terminal", file=sys.stderr)
            return 2
        choice = _choose_interactively()
        if choice is None:
            return 0
    try:
        specs = resolve(choice)
    except KeyError as exc:
        print(f"unknown scenario {exc.args[0]!r}\n\n{scenario_menu()}", file=sys.stderr)
        return 2
    if args.parallel > 1 and choice == "all":
        specs = resolve("complex-multi-batch")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mobile_flow_"))
    config = SimConfig(
        server_url=args.server,
        db_url=args.db,
        workdir=workdir,
        jwt_secret=args.jwt_secret,
        sizes=Sizes.quick() if args.quick else Sizes.full(),
        keep_files=args.keep_files,
        verbose=args.verbose,
    )
    progress = ConsoleProgress(plain=args.plain)
    results = asyncio.run(
        run(config, specs, parallel=args.parallel, cleanup=args.cleanup, progress=progress)
    )
    render_summary(results, plain=args.plain)
    meta = {
        "server": args.server,
        "run_id": config.run_id,
        "parallel": args.parallel,
        "sizes": "quick" if args.quick else "full",
    }
    if args.report_json:
        write_json(args.report_json, results, meta)
    if args.report_html:
        write_html(args.report_html, results, meta)
    if args.keep_files:
        print(f"device databases kept in {workdir}")
    return 1 if any(r.status == "failed" for r in results) else 0
