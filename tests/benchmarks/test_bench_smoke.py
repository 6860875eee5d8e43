"""Smoke test of ``python -m benchmarks`` at a tiny size: it runs, prints, writes JSON.

Benchmarks are never timed here; this only guards the harness against bit rot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import discover
from oversync_sa.testing import ENV_DATABASE_URL, PostgresServer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres

PG_MODULES = ("go_compare", "http_load", "server_push_pull", "watch_latency")


def test_one_command_discovers_every_benchmark_and_the_soak_only_on_request() -> None:
    assert set(discover()) == {"client", *PG_MODULES}
    assert set(discover(opt_in=True)) == {"client", "soak", *PG_MODULES}
    assert set(discover(["soak"])) == {"soak"}


def test_benchmarks_run_at_tiny_scale(pg_server: PostgresServer, tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    # No go-oversync checkout there: the comparison must say so and skip, deterministically
    # (building and running Go's server is for real benchmark runs, not for this smoke test).
    missing = tmp_path / "no-go-oversync"
    env = {
        **os.environ, ENV_DATABASE_URL: pg_server.url, "PYTHONPATH": str(ROOT),
        "OVERSYNC_GO_SRC": str(missing),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--scale", "0.002", "--output", str(output),
         # The client module has its own smoke test (test_bench_client_smoke.py).
         *(f"--only={name}" for name in PG_MODULES)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for name in ("server: push commit", "server: pull", "server: snapshot"):
        assert any(line.startswith(name) for line in lines), proc.stdout
    assert any("baseline: COPY" in line for line in lines)
    assert any("capture + owner-guard triggers" in line for line in lines)

    data = json.loads(output.read_text(encoding="utf-8"))
    # Every module writes its own lines; the server module's are the three checked in detail.
    server = [m for m in data["measurements"] if m["benchmark"] == "server"]
    assert len(server) == 3
    measured = [m for m in data["measurements"] if m["skipped"] is None]
    for measurement in measured:
        assert measurement["rows"] > 0
        assert measurement["seconds"] > 0
        assert measurement["baseline_seconds"] > 0
        assert measurement["ratio"] > 0
    # Every line, measured or skipped, is in the one summary table and in results.json.
    summary = lines[lines.index("SUMMARY"):]
    for measurement in data["measurements"]:
        name = f"{measurement['benchmark']}: {measurement['name']}"
        assert any(line.startswith(name) for line in summary), (name, summary)
        assert set(measurement["summary"]) == {"figure", "baseline", "target"}
    assert {m["benchmark"] for m in data["measurements"]} == {"server", "http", "watch", "go"}
    # The HTTP load lines: real server processes (1 and 2 workers), a few devices, no errors.
    for workers in ("1 worker", "2 workers"):
        assert any(line.startswith(f"http: load (2 devices, {workers})") for line in lines)
    assert sum("note: errors: 0 (baseline: 0)" in line for line in lines) >= 4, proc.stdout
    http = [m for m in data["measurements"] if m["benchmark"] == "http"]
    assert [m["errors"] for m in http] == [0, 0]
    # Watch wake-ups: same worker and across two worker processes, every wake-up delivered.
    watch = [m for m in data["measurements"] if m["benchmark"] == "watch"]
    assert [m["name"].endswith(("same worker)", "cross worker)")) for m in watch] == [True, True]
    assert [m["errors"] for m in watch] == [0, 0]
    assert all(m["rows"] >= 3 * 2 for m in watch)  # pushes x subscribers samples
    # go-oversync comparison: skipped, with the reason spelled out in the table and the JSON.
    (go,) = [m for m in data["measurements"] if m["benchmark"] == "go"]
    assert go["skipped"] == f"no go-oversync checkout at {missing} (set OVERSYNC_GO_SRC)"
    assert go["target_ratio"] == 1.5
    assert any(line.startswith("go: push vs go-oversync") and "skip" in line for line in summary)
    push = server[0]
    assert push["rows"] == 20
    assert {s["name"] for s in push["stages"]} >= {"chunk staging", "create session"}
