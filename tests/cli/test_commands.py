"""``serve`` and ``simulate`` failure paths, ``main()``, and the packaging of the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from oversync_sa.cli import main
from oversync_sa.cli.simulate import SIMULATOR_MODULE
from tests.cli.conftest import Invoke

REPO_ROOT = Path(__file__).resolve().parents[2]
_SERVER_MODULES = (
    "examples.litestar_server",
    "examples.litestar_server.__main__",
    "examples.litestar_server.settings",
    "examples.litestar_server.app",
)


def _forget(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make the next import of ``names`` run again (restored after the test)."""
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_serve_without_examples_package_says_so(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forget(monkeypatch, *_SERVER_MODULES)
    monkeypatch.setitem(sys.modules, "examples", None)  # as in an installed wheel
    result = invoke(["serve"])
    assert result.exit_code == 2
    assert "the reference server is not available" in result.stderr
    assert "checkout" in result.stderr
    assert "Traceback" not in result.output


def test_serve_without_server_dependencies_names_the_extra(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forget(monkeypatch, "examples.litestar_server.__main__")
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = invoke(["serve"])
    assert result.exit_code == 2
    assert "needs the Python package 'uvicorn'" in result.stderr
    assert "oversync-sa[all]" in result.stderr


def test_serve_with_invalid_environment_exits_2(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERSYNC_DB_POOL_MAX_CONNS", "0")
    result = invoke(["serve"])
    assert result.exit_code == 2
    assert "invalid server configuration: OVERSYNC_DB_POOL_MAX_CONNS must be >= 1" in (
        result.stderr
    )


def test_serve_maps_options_onto_the_example_settings(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    import examples.litestar_server.__main__ as server_main
    from examples.litestar_server.settings import Settings

    seen: list[Settings] = []

    async def fake_serve(settings: Settings) -> None:
        seen.append(settings)

    monkeypatch.setattr(server_main, "serve", fake_serve)
    monkeypatch.setenv("PORT", "9999")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = invoke(
        [
            "serve",
            "--host",
            "127.0.0.1",
            "--database-url",
            "postgresql://x/y",
            "--data-dir",
            "/tmp/pg",
        ]
    )
    assert result.exit_code == 0, result.output
    [settings] = seen
    assert (settings.host, settings.port, settings.database_url, str(settings.data_dir)) == (
        "127.0.0.1",
        9999,
        "postgresql://x/y",
        "/tmp/pg",
    )


@pytest.mark.parametrize(
    ("raised", "message"),
    [
        (RuntimeError("no PostgreSQL binaries were found"), "could not start: no PostgreSQL"),
        (SystemExit(1), "uvicorn exited with 1"),
    ],
)
def test_serve_start_failures_exit_2(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch, raised: BaseException, message: str
) -> None:
    import examples.litestar_server.__main__ as server_main

    async def failing_serve(settings: object) -> None:
        raise raised

    monkeypatch.setattr(server_main, "serve", failing_serve)
    result = invoke(["serve", "--port", "1234"])
    assert result.exit_code == 2
    assert message in result.stderr


def test_serve_rejects_bad_port(invoke: Invoke) -> None:
    assert invoke(["serve", "--port", "0"]).exit_code == 2
    assert invoke(["serve", "--port", "70000"]).exit_code == 2


# ---------------------------------------------------------------------------- simulate


def test_simulate_is_not_available_yet(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, SIMULATOR_MODULE, None)
    result = invoke(["simulate"])
    assert result.exit_code == 2
    assert "simulate is not available yet" in result.stderr
    assert "examples.mobile_flow" in result.stderr
    assert "--verbose" not in result.stderr  # nothing more to see


def test_simulate_runs_the_simulator_main_with_the_arguments(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    fake = ModuleType(SIMULATOR_MODULE)

    def fake_main(argv: list[str]) -> int:
        calls.append(argv)
        return 3

    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, SIMULATOR_MODULE, fake)
    result = invoke(["simulate", "--devices", "4", "fast"])
    assert result.exit_code == 3
    assert calls == [["--devices", "4", "fast"]]


def test_simulate_without_entry_point_is_not_available_yet(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The package exists (being written) but exposes no main, nor a __main__ module.
    monkeypatch.setitem(sys.modules, SIMULATOR_MODULE, ModuleType(SIMULATOR_MODULE))
    result = invoke(["simulate"])
    assert result.exit_code == 2
    assert "simulate is not available yet" in result.stderr


def test_simulate_uses_the_main_module_and_sys_argv(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    package = ModuleType(SIMULATOR_MODULE)
    main_module = ModuleType(f"{SIMULATOR_MODULE}.__main__")

    def main_without_args() -> None:
        seen.append(sys.argv[1:])
        raise SystemExit(4)

    main_module.main = main_without_args  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, SIMULATOR_MODULE, package)
    monkeypatch.setitem(sys.modules, main_module.__name__, main_module)
    result = invoke(["simulate", "--seed", "7"])
    assert result.exit_code == 4
    assert seen == [["--seed", "7"]]


def test_unexpected_errors_are_one_line_unless_verbose(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = ModuleType(SIMULATOR_MODULE)

    def broken_main(argv: list[str]) -> int:
        raise KeyError("surprise")

    fake.main = broken_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, SIMULATOR_MODULE, fake)
    quiet = invoke(["simulate"])
    assert quiet.exit_code == 2
    assert "unexpected KeyError: 'surprise'" in quiet.stderr
    assert "Traceback" not in quiet.output
    loud = invoke(["simulate", "--verbose"])
    assert loud.exit_code == 2
    assert "Traceback" in loud.stderr
    assert "broken_main" in loud.stderr


# ------------------------------------------------------------------------ main, packaging


def test_main_returns_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "check-schema" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2
    assert main([]) == 2  # no arguments: help, as a usage error


def test_main_without_typer_explains_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _forget(monkeypatch, "oversync_sa.cli._app")
    monkeypatch.setitem(sys.modules, "typer", None)
    assert main(["--help"]) == 2
    assert "pip install 'oversync-sa[cli]'" in capsys.readouterr().err


def test_core_imports_without_typer_and_rich() -> None:
    code = (
        "import sys\n"
        "sys.modules.update(typer=None, rich=None)\n"
        "import oversync_sa, oversync_sa.server, oversync_sa.metadata, oversync_sa.wire\n"
        "import oversync_sa.cli\n"
        "assert 'typer' not in [m for m, v in sys.modules.items() if v is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_console_script_and_extras_are_declared() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["oversync-sa"] == "oversync_sa.cli:main"
    extras = project["optional-dependencies"]
    assert {d.split(">")[0] for d in extras["cli"]} == {"typer", "rich"}
    assert "cli" in extras["all"][0]


def test_module_entry_point_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "oversync_sa.cli", "prune", "--window", "-1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},  # works without an install too
    )
    assert result.returncode == 2  # a usage error, reported by the real entry point
    assert "--window" in result.stderr
