"""Run the CLI in-process with typer's runner; every test builds a fresh app."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from click.testing import Result
from typer.testing import CliRunner

from oversync_sa.cli._app import build_app

Invoke = Callable[..., Result]


@pytest.fixture
def invoke() -> Invoke:
    # Wide columns: rich must not wrap table cells or messages that tests look for.
    runner = CliRunner(env={"COLUMNS": "240", "NO_COLOR": "1"})

    def run(args: Sequence[str], **kwargs: object) -> Result:
        return runner.invoke(build_app(), list(args), **kwargs)  # type: ignore[arg-type]

    return run
