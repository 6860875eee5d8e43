"""The documentation site: it builds strictly, and nothing in it can drift from the code.

* every wire error code of ``WIRE_ERRORS`` is in the troubleshooting table, with its status;
* the HTTP API page is rendered from the contract, which is the shared spec's copy;
* every code block is either included from ``docs/snippets`` (run by test_snippets.py),
  executed here (Python), a checked command line (bash), or a diagram.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
import typer.main

from oversync_sa.cli._app import build_app
from oversync_sa.errors import WIRE_ERRORS

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SHARED_SPEC = REPO.parent / "shared" / "spec" / "two_way_sync.yaml"
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
_INCLUDE = re.compile(r'^--8<-- "([^"]+)"$')
# Pages whose code blocks another test already runs.
_TESTED_ELSEWHERE = {"alembic.md": "tests/alembic/test_alembic_docs.py"}


def _http_api_hook() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("http_api_hook", DOCS / "hooks" / "http_api.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "snippets" not in p.parts)


def _blocks(page: Path) -> list[tuple[str, str]]:
    return _FENCE.findall(page.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------- build


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (pip install 'oversync-sa[dev]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    http = (tmp_path / "site" / "api" / "http" / "index.html").read_text()
    assert "/sync/push-sessions/{push_id}/commit" in http
    assert "http-api: generated" not in http  # the hook replaced its marker


def test_every_page_is_in_the_nav() -> None:
    config = (REPO / "mkdocs.yml").read_text()
    for page in _pages():
        assert page.relative_to(DOCS).as_posix() in config, page


# ---------------------------------------------------------------------- troubleshooting


def test_troubleshooting_lists_every_wire_error_code() -> None:
    rows = re.findall(
        r"^\| `([a-z_]+)` \| (\d{3}) \| ([^|]+) \| (.+) \|$",
        (DOCS / "troubleshooting.md").read_text(),
        re.M,
    )
    documented = {code: int(status) for code, status, _, _ in rows}
    assert len(documented) == len(rows), "a code is listed twice"
    assert documented == {code: cls.status for code, cls in WIRE_ERRORS.items()}
    for code, _, cause, fix in rows:
        assert len(cause.strip()) > 10, code
        assert len(fix.strip()) > 10, code


# ------------------------------------------------------------------------------ HTTP API


def test_http_api_page_covers_the_whole_contract() -> None:
    hook = _http_api_hook()
    spec = hook.load_spec()
    page = hook.render(spec)
    for path, item in spec["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in page
    anchors = set(re.findall(r"\{#(schema-[a-z]+)\}", page))
    assert anchors == {f"schema-{name.lower()}" for name in spec["components"]["schemas"]}
    assert set(re.findall(r"\]\(#(schema-[a-z]+)\)", page)) <= anchors
    assert hook.MARKER in (DOCS / "api" / "http.md").read_text()
    assert hook.on_page_markdown("no marker") == "no marker"


def test_http_api_hook_rejects_a_non_openapi_file(tmp_path: Path) -> None:
    bogus = tmp_path / "x.yaml"
    bogus.write_text("just: text\n")
    with pytest.raises(ValueError, match="not an OpenAPI document"):
        _http_api_hook().load_spec(bogus)


def test_contract_is_the_shared_spec() -> None:
    if not SHARED_SPEC.exists():
        pytest.skip(f"no shared spec at {SHARED_SPEC} to compare with")
    assert (DOCS / "api" / "two_way_sync.yaml").read_bytes() == SHARED_SPEC.read_bytes()


# ---------------------------------------------------------------------------- code blocks


def test_included_snippets_exist() -> None:
    for page in _pages():
        for _, body in _blocks(page):
            for line in body.splitlines():
                if match := _INCLUDE.match(line.strip()):
                    target = match.group(1).split(":", 1)[0]
                    assert (REPO / target).is_file(), f"{page.name}: {target}"


def test_every_code_block_is_tested() -> None:
    for page in _pages():
        if page.name in _TESTED_ELSEWHERE:
            continue
        for lang, body in _blocks(page):
            lines = [line for line in body.splitlines() if line.strip()]
            if lang in {"", "text", "mermaid"}:
                continue  # diagrams
            if lang == "python" and all(_INCLUDE.match(line) for line in lines):
                continue  # run by test_snippets.py
            assert lang in {"python", "bash"}, f"{page.name}: unchecked ```{lang} block"


@pytest.mark.parametrize(
    "page", [p for p in _pages() if p.name not in _TESTED_ELSEWHERE], ids=lambda p: p.name
)
def test_inline_python_blocks_run(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python written directly in a page (not included) is executed, doctest-style.

    Each block runs as a real module: SQLAlchemy resolves ``Mapped[...]`` annotations through
    ``sys.modules[cls.__module__]``.
    """
    for number, (lang, body) in enumerate(_blocks(page)):
        if lang == "python" and not body.lstrip().startswith("--8<--"):
            module = types.ModuleType(f"docs_block_{page.stem}_{number}")
            monkeypatch.setitem(sys.modules, module.__name__, module)
            exec(compile(body, f"{page.name}:block {number}", "exec"), module.__dict__)


def _bash_lines() -> list[tuple[str, str]]:
    found = []
    for page in _pages():
        for lang, body in _blocks(page):
            if lang == "bash":
                found += [(page.name, line.strip()) for line in body.splitlines() if line.strip()]
    return found


@pytest.mark.parametrize(("page", "line"), _bash_lines())
def test_bash_command_lines_are_valid(page: str, line: str) -> None:
    words = shlex.split(line)
    while words and re.fullmatch(r"[A-Z_]+=\S+", words[0]):
        words.pop(0)  # VAR=value prefixes
    program, args = words[0], words[1:]
    if program == "oversync-sa":
        group = typer.main.get_command(build_app())
        command = group.get_command(group.make_context("oversync-sa", list(args)), args[0])
        assert command is not None, line
        command.make_context(args[0], args[1:])  # raises on unknown options or missing args
    elif program == "pip":
        extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]
        for spec in args[1:]:
            for extra in re.findall(r"oversync-sa\[([\w,]+)\]", spec)[0].split(","):
                assert extra in extras, line
    elif program == "python3" and args[0] == "scripts/dev.py":
        assert f'job == "{args[1]}"' in (REPO / "scripts" / "dev.py").read_text(), line
    elif program == "uvicorn":
        module, attr = args[-1].split(":")
        source = (DOCS / "snippets" / "quickstart" / f"{module}.py").read_text()
        assert f"def {attr}(" in source, line
    else:
        pytest.fail(f"{page}: no check for command {line!r}")
