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

from oversync_sa.testing import ENV_DATABASE_URL, PostgresServer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres


def test_benchmarks_run_at_tiny_scale(pg_server: PostgresServer, tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    env = {**os.environ, ENV_DATABASE_URL: pg_server.url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--scale", "0.002", "--output", str(output)],
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
    for measurement in data["measurements"]:
        assert measurement["rows"] > 0
        assert measurement["seconds"] > 0
        assert measurement["baseline_seconds"] > 0
        assert measurement["ratio"] > 0
    # The HTTP load line: a real server process, a handful of devices, no errors.
    assert any(line.startswith("http: load (2 devices)") for line in lines), proc.stdout
    assert any("note: errors: 0 (baseline: 0)" in line for line in lines), proc.stdout
    push = server[0]
    assert push["rows"] == 20
    assert {s["name"] for s in push["stages"]} >= {"chunk staging", "create session"}
