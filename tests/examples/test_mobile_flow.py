"""The mobile_flow simulator against the reference server running as a real process.

One server (uvicorn, own port) over a fresh database for the module; every scenario runs with
the reduced sizes and must pass, checked on the devices and directly in PostgreSQL. Plus the
demo's entry point (server start/stop, embedded PostgreSQL discovery) and the report writers.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.demo import run_demo
from examples.mobile_flow.cli import main as cli_main, run
from examples.mobile_flow.context import SCENARIOS, ScenarioSpec, SimConfig, Sizes
from examples.mobile_flow.device import Device
from examples.mobile_flow.net import TokenSource
from examples.mobile_flow.report import ConsoleProgress, render_summary, write_html, write_json
from examples.mobile_flow.runner import ScenarioResult
from examples.mobile_flow.scenarios import ALL, WATCH_ALL, resolve
from examples.mobile_flow.schema import client_config
from examples.mobile_flow.server_process import ServerProcess
from oversync_sa.testing import PostgresServer

pytestmark = pytest.mark.postgres



@pytest.fixture(scope="module")
def server(
    pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    url = pg_server.create_database()
    workdir = tmp_path_factory.mktemp("mobile-flow-server")
    process = ServerProcess(workdir=workdir, log_path=workdir / "server.log", database_url=url)
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        code = process.stop()
        pg_server.drop_database(url)
    assert code == 0, process.log_tail()


@pytest.fixture
def sim_config(server: ServerProcess, tmp_path: Path) -> SimConfig:
    return SimConfig(
        server_url=server.base_url,
        db_url=server.database_url,
        workdir=tmp_path,
        sizes=Sizes.quick(),
    )


def _params() -> list[object]:
    params: list[object] = []
    for name in (*ALL, *WATCH_ALL):
        params.append(pytest.param(name, id=name))
    return params


@pytest.mark.parametrize("name", _params())
async def test_scenario_passes(name: str, sim_config: SimConfig) -> None:
    out = io.StringIO()
    results = await run(sim_config, resolve(name), progress=ConsoleProgress(out, plain=True))
    assert [r.name for r in results] == [name]
    result = results[0]
    assert result.status == "passed", f"{result.error}\n{out.getvalue()}"
    assert result.requests > 0
    # Nothing is left behind on disk once a scenario is over.
    assert not list(sim_config.workdir.glob("mobile_flow_*.db"))


async def test_second_user_can_push_from_a_device_that_pushed_for_the_first(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Minimal reproduction, without the simulator's scenario code."""
    tokens = TokenSource(server.base_url)
    run_id = uuid.uuid4().hex[:8]
    device = await Device.create(
        "phone",
        tmp_path / "phone.db",
        server_url=server.base_url,
        tokens=tokens,
        config=client_config(),
    )
    try:
        await device.launch()
        await device.sign_in(f"alice-{run_id}", background=False)
        await device.create_user("Alice", "alice@example.com")
        await device.client.push_pending()
        await device.detach()
        await device.sign_in(f"bob-{run_id}", background=False)  # empty account: initialize_empty
        await device.create_user("Bob", "bob@example.com")
        # Detach rotated the used source, so Bob's first bundle is (new source, 1): no
        # source_sequence_out_of_order and no source recovery (CLIENT.md §12.28).
        await device.client.push_pending()
        assert await device.pending_count() == 0
    finally:
        await device.close()


async def test_failed_outcome_is_reported_not_raised(sim_config: SimConfig) -> None:
    """A scenario whose server is unreachable fails with a message; the run goes on."""
    broken = SimConfig(
        server_url="http://127.0.0.1:9",
        db_url=sim_config.db_url,
        workdir=sim_config.workdir,
        sizes=Sizes.quick(),
    )
    results = await run(
        broken,
        resolve("normal-usage,typed-rows"),
        progress=ConsoleProgress(io.StringIO(), plain=True),
    )
    assert [r.status for r in results] == ["failed", "failed"]
    assert all(r.error for r in results)


def _results() -> list[ScenarioResult]:
    return [
        ScenarioResult("fresh-install", "Fresh Install", "passed", 1.5, 8, 0, 6),
        ScenarioResult("conflicts", "Conflicts", "failed", 3.0, 60, 60, 80, error="boom <x>"),
        ScenarioResult("watch-idle-cleanup", "Watch", "skipped", 0.1, error="no watch"),
    ]


def test_reports(tmp_path: Path) -> None:
    results = _results()
    write_json(tmp_path / "r.json", results, {"server": "http://s"})
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["totals"] == {
        "passed": 1,
        "failed": 1,
        "skipped": 1,
        "seconds": 4.6,
        "rows_uploaded": 68,
        "rows_downloaded": 60,
        "requests": 86,
    }
    assert [s["status"] for s in doc["scenarios"]] == ["passed", "failed", "skipped"]
    write_html(tmp_path / "r.html", results, {"server": "http://s"})
    page = (tmp_path / "r.html").read_text()
    assert page.count("<rect ") == 3  # one timing bar per scenario
    assert "boom &lt;x&gt;" in page  # errors are escaped
    out = io.StringIO()
    render_summary(results, out, plain=True)
    assert "1 passed, 1 failed, 1 skipped" in out.getvalue()


def test_cli_without_scenario_off_a_terminal_lists_and_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli_main([]) == 2
    listing = capsys.readouterr().out
    assert all(name in listing for name in (*ALL, *WATCH_ALL))
    assert cli_main(["--scenario", "no-such-scenario"]) == 2


@pytest.fixture
def traversable_dir() -> Iterator[Path]:
    """A directory PostgreSQL's service user can reach when the tests run as root.

    pytest's ``tmp_path`` sits below a ``0700`` directory of the current user, and the embedded
    cluster (``runuser -u postgres``) only opens up the data directory's immediate parent.
    """
    path = Path(tempfile.mkdtemp(prefix="oversync-demo-test-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_demo_on_embedded_postgres(traversable_dir: Path) -> None:
    """The quick-start path: the server starts its own PostgreSQL, the demo finds it."""
    workdir = traversable_dir / "demo"
    code, results = run_demo(["fresh-install", "files-sync"], workdir=workdir, plain=True)
    assert code == 0, (workdir / "server.log").read_text()[-3000:]
    assert [(r.name, r.status) for r in results] == [
        ("fresh-install", "passed"),
        ("files-sync", "passed"),
    ]
    assert (workdir / ".oversync" / "pgdata" / "PG_VERSION").exists()


def test_demo_reports_failure_with_nonzero_exit(
    pg_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_server.create_database()

    async def failing(ctx: object) -> None:
        raise AssertionError("forced failure")

    spec = SCENARIOS["typed-rows"]
    monkeypatch.setitem(
        SCENARIOS, "typed-rows", ScenarioSpec(spec.name, spec.title, spec.description, failing)
    )
    try:
        code, results = run_demo(
            ["typed-rows"], workdir=tmp_path / "demo", database_url=url, plain=True
        )
    finally:
        pg_server.drop_database(url)
    assert code == 1
    assert results[0].error == "forced failure"
