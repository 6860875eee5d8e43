#!/usr/bin/env python3
"""One entry point for a fresh machine that has nothing but Python 3.11+.

    python3 scripts/dev.py demo    # the main job: reference server on embedded PostgreSQL + devices
    python3 scripts/dev.py test    # install everything and run the whole test suite
    python3 scripts/dev.py lint    # ruff + mypy (what CI adds to the tests)

It creates ``.venv`` next to this repository (reused on later runs), installs the project with
all extras into it, then runs the requested job inside it. Extra arguments are passed on
(``python3 scripts/dev.py test -k bootstrap``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".oversync-installed"


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _ensure_env() -> Path:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs on any python3
        sys.exit(f"oversync-sa needs Python 3.11+, this is {sys.version.split()[0]}")
    if not _python().exists():
        print(f"[dev] creating virtualenv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != wanted:
        print("[dev] installing oversync-sa[dev] (all extras) into .venv", flush=True)
        subprocess.run(
            [str(_python()), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True
        )
        subprocess.run(
            [str(_python()), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]"], check=True
        )
        STAMP.write_text(wanted)
    return _python()


def _run(args: list[str]) -> int:
    return subprocess.run(args, cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    job = argv[0] if argv else "test"
    rest = argv[1:]
    py = str(_ensure_env())
    if job == "test":
        return _run([py, "-m", "pytest", *rest])
    if job == "lint":
        code = _run([py, "-m", "ruff", "check", "oversync_sa", "alembic_ext", "tests", "examples",
                     "benchmarks", "scripts", "docs"])
        return code or _run([py, "-m", "mypy", "oversync_sa"])
    if job == "demo":
        return _run([py, "-m", "examples.demo", *rest])
    if job == "bench":
        return _run([py, "-m", "benchmarks", *rest])
    sys.exit(f"unknown job {job!r}: use demo, test, lint or bench")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
