"""Smoke test of ``python -m benchmarks.client`` at a tiny size: it runs, prints, writes JSON.

The client benchmarks need no PostgreSQL. Nothing here looks at a timing; this only guards the
module (fake server, subprocess RSS probe, table and results.json) against bit rot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LINES = (
    "client: capture (20 rows",
    "client: capture (200 rows, 1 tx)",
    "client: capture (200 rows, 1 tx, 64 MiB cache)",
    "client: pull apply (200 rows",
    "client: snapshot rebuild (200 rows",
    "client: snapshot RSS (2,000 rows",
)


def test_client_benchmarks_run_at_tiny_scale(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.client", "--scale", "0.002", "--output", str(output)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for name in LINES:
        assert any(line.startswith(name) for line in lines), proc.stdout
    assert sum("baseline: executemany" in line for line in lines) == len(LINES)
    assert any("CPU time:" in line for line in lines)
    assert any("peak RSS = whole fresh process" in line for line in lines)

    data = json.loads(output.read_text(encoding="utf-8"))
    measurements = data["measurements"]
    assert [m["benchmark"] for m in measurements] == ["client"] * len(LINES)
    for measurement in measurements:
        assert measurement["rows"] > 0
        assert measurement["seconds"] > 0
        assert measurement["baseline_seconds"] > 0
        assert measurement["ratio"] > 0
        assert isinstance(measurement["meets_target"], bool)
    capture, pull = measurements[1], measurements[3]
    assert capture["min_rows_per_second"] == 40_000
    assert {s["name"] for s in capture["stages"]} >= {"COMMIT"}
    assert pull["target_ratio"] == 0.4
    assert any(s["name"].startswith("apply_bundle") for s in pull["stages"])
    rss = measurements[5]
    assert rss["rows"] == 2_000
    assert rss["peak_rss_kib"] > 0
    assert rss["max_peak_rss_kib"] == 250_000_000 // 1024
