"""The crash-point seam itself: parsing, killing on the N-th visit, and no point left unused."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from oversync_sa._crashpoints import CRASH_POINTS, ENV_CRASH_POINT, _parse
from oversync_sa.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]
_CALL = re.compile(r'crash_point\("([^"]+)"\)')
_VISIT_THREE_TIMES = (
    "from oversync_sa._crashpoints import crash_point\n"
    "for visit in range(3):\n"
    "    print(visit, flush=True)\n"
    "    crash_point('client.pull.applied')\n"
)


def _run(armed: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _VISIT_THREE_TIMES], cwd=REPO, capture_output=True, text=True,
        env={"PATH": "", ENV_CRASH_POINT: armed}, timeout=60, check=False,
    )


def test_parse_accepts_name_and_visit_count() -> None:
    assert _parse("") is None
    assert _parse(" client.pull.applied ") == ("client.pull.applied", 1)
    assert _parse("client.push.chunk_uploaded@2") == ("client.push.chunk_uploaded", 2)


@pytest.mark.parametrize(
    "value", ["client.pull.aplied", "client.pull.applied@0", "client.pull.applied@x", "@2"]
)
def test_parse_rejects_typos(value: str) -> None:
    with pytest.raises(ConfigurationError, match=ENV_CRASH_POINT):
        _parse(value)


def test_process_dies_by_sigkill_on_the_nth_visit() -> None:
    proc = _run("client.pull.applied@2")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.split() == ["0", "1"]


def test_other_points_do_not_fire() -> None:
    proc = _run("client.push.commit_replied")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "1", "2"]


def test_unknown_point_fails_the_import() -> None:
    proc = _run("client.nowhere")
    assert proc.returncode == 1
    assert "ConfigurationError" in proc.stderr
    assert "client.nowhere" in proc.stderr


def test_every_point_is_placed_exactly_once_in_the_library() -> None:
    calls: Counter[str] = Counter()
    for path in (REPO / "oversync_sa").rglob("*.py"):
        calls.update(_CALL.findall(path.read_text(encoding="utf-8")))
    assert set(calls) == set(CRASH_POINTS)
    assert [name for name, count in calls.items() if count != 1] == []


def test_every_point_is_crashed_by_the_suite_and_documented() -> None:
    here = Path(__file__).parent
    suite = "".join(
        (here / name).read_text(encoding="utf-8")
        for name in ("test_crash_client.py", "test_crash_server.py")
    )
    docs = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name in CRASH_POINTS:
        assert re.search(rf'"{re.escape(name)}(@\d+)?"', suite), f"{name} is never crashed"
        assert f"`{name}" in docs, f"{name} is not documented"
