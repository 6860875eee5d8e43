"""The top-level package exposes the everyday names without importing the extras eagerly."""

from __future__ import annotations

import subprocess
import sys

import pytest

import oversync_sa


@pytest.mark.parametrize("name", sorted(set(oversync_sa.__all__) - {"__version__"}))
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(oversync_sa, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = oversync_sa.no_such_name  # type: ignore[attr-defined]


def test_import_does_not_load_server_or_client_extras() -> None:
    code = (
        "import sys, oversync_sa;"
        "print(sorted(m for m in ('asyncpg','litestar','httpx','aiosqlite','oversync_sa.server',"
        "'oversync_sa.client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
