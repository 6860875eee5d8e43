"""The soak's CI profile: a few real clients against two server workers for a few seconds.

Asserts the soak's functional verdicts only - no errors, every device converged with the server,
and watch wake-ups that crossed from one worker process to another - never timings or RSS.
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


def test_soak_ci_profile(pg_server: PostgresServer, tmp_path: Path) -> None:
    output = tmp_path / "soak.json"
    env = {**os.environ, ENV_DATABASE_URL: pg_server.url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.soak", "--clients", "6", "--duration", "8",
            "--workers", "2", "--sample-every", "1", "--output", str(output),
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert any(line.startswith("soak: 6 clients") for line in proc.stdout.splitlines())
    assert "SUMMARY" in proc.stdout

    (line,) = json.loads(output.read_text(encoding="utf-8"))["measurements"]
    result = line["result"]
    assert result["devices"] == 6
    assert result["syncs"] > 0
    assert result["errors"] == 0, result["error_examples"]
    assert result["converged"], result["mismatches"]
    assert result["rows_on_server"] > 0
    # A watcher on one worker was woken by a commit that another worker made.
    assert result["wakes"]["cross_worker"] > 0
    # Both workers were sampled, and PostgreSQL saw the workers' connections.
    assert [w["worker"] for w in result["rss"]] == [0, 1]
    assert all(w["samples"] > 0 for w in result["rss"])
    assert result["connections"]["max"] > 0
