"""``oversync-sa check-schema``: bootstrap validation only, every violation listed."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli._support import MODELS, create_tables, run_sql
from tests.cli.conftest import Invoke

pytestmark = pytest.mark.postgres

# A schema breaking several rules at once (the models also register "books"):
#   authors: no scope column, primary key not scope-first, no (scope, id) identity;
#   books:   FK on (author_id) alone, not deferrable.
_BROKEN_SCHEMA = (
    "CREATE SCHEMA business",
    "CREATE TABLE business.authors (id uuid PRIMARY KEY, name text NOT NULL)",
    "CREATE TABLE business.books (_sync_scope_id text NOT NULL, id uuid NOT NULL,"
    " title text NOT NULL, author_id uuid,"
    " CONSTRAINT books_pkey PRIMARY KEY (_sync_scope_id, id),"
    " CONSTRAINT books_author_id_fkey FOREIGN KEY (author_id) REFERENCES business.authors (id))",
)
_BROKEN_RULES = {
    ("business.authors", "scope_column", None),
    ("business.authors", "unique_index_scope", "authors_pkey"),
    ("business.authors", "unique_identity", None),
    ("business.books", "fk_scope_inclusive", "books_author_id_fkey"),
    ("business.books", "fk_deferrable", "books_author_id_fkey"),
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_valid_schema_exits_0_and_creates_nothing(invoke: Invoke, pg_url: str) -> None:
    create_tables(pg_url)
    result = invoke(["check-schema", pg_url, "--models", MODELS])
    assert result.exit_code == 0, result.output
    assert "ok:" in result.stdout
    assert "business.authors, business.books" in result.stdout
    # Validation only: no sync layout, no trigger.
    assert run_sql(pg_url, "SELECT to_regnamespace('sync')::text") == [None]
    assert run_sql(pg_url, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == [0]


def test_valid_schema_json(invoke: Invoke, pg_url: str) -> None:
    create_tables(pg_url)
    result = invoke(["check-schema", pg_url, "-m", MODELS, "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "source": "database",
        "tables": ["business.authors", "business.books"],
        "valid": True,
        "violations": [],
    }


def test_invalid_schema_lists_every_violation(invoke: Invoke, pg_url: str) -> None:
    run_sql(pg_url, *_BROKEN_SCHEMA)
    result = invoke(["check-schema", pg_url, "--models", MODELS, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    found = {(v["table"], v["rule"], v["constraint"]) for v in report["violations"]}
    assert found == _BROKEN_RULES

    table = invoke(["check-schema", pg_url, "--models", MODELS])
    assert table.exit_code == 1
    assert "5 violation(s) in 2 table(s) (database)" in table.stdout
    for _, rule, constraint in _BROKEN_RULES:
        assert rule in table.stdout
        assert constraint is None or constraint in table.stdout


def test_missing_tables_are_violations(invoke: Invoke, pg_url: str) -> None:
    result = invoke(["check-schema", pg_url, "--models", MODELS, "--schema", "elsewhere", "--json"])
    assert result.exit_code == 1
    found = {(v["table"], v["rule"]) for v in json.loads(result.stdout)["violations"]}
    assert found == {("elsewhere.authors", "table_missing"), ("elsewhere.books", "table_missing")}


@pytest.fixture
def bad_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module whose model is rejected when it is declared."""
    (tmp_path / "cli_bad_models.py").write_text(
        "from sqlalchemy.orm import Mapped, mapped_column\n"
        "from oversync_sa.metadata import SyncedBase\n"
        "class Base(SyncedBase):\n    pass\n"
        "class Thing(Base):\n"
        "    __tablename__ = 'Things'\n"
        "    id: Mapped[int] = mapped_column(primary_key=True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "cli_bad_models:Base"
    sys.modules.pop("cli_bad_models", None)


def test_models_rejected_at_declaration_are_violations_too(invoke: Invoke, bad_models: str) -> None:
    # No database is needed to report these; the URL is never used.
    result = invoke(["check-schema", "postgresql://nowhere/db", "-m", bad_models, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["source"] == "models"
    assert {v["rule"] for v in report["violations"]} == {"identifier_case", "key_type"}


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ("no_colon_here", "--models must look like 'package.module:Base'"),
        ("tests.cli._models:", "--models must look like"),
        ("tests.cli.does_not_exist:Base", "cannot import module 'tests.cli.does_not_exist'"),
        ("tests.cli._models:Missing", "has no attribute 'Missing'"),
        ("tests.cli._models:NOT_A_BASE", "expected a declarative base class or a MetaData"),
        ("tests.cli._models:EmptyBase", "declares no synced tables"),
    ],
)
def test_bad_models_option_is_a_usage_error(invoke: Invoke, models: str, message: str) -> None:
    result = invoke(["check-schema", "postgresql://127.0.0.1:1/db", "--models", models])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_importing_a_broken_module_is_a_usage_error(
    invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cli_broken_import.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke(["check-schema", "postgresql://h/db", "-m", "cli_broken_import:Base"])
    assert result.exit_code == 2
    assert "importing 'cli_broken_import' failed: RuntimeError: boom at import" in result.stderr


def test_missing_arguments_are_usage_errors(invoke: Invoke) -> None:
    assert invoke(["check-schema"]).exit_code == 2
    assert invoke(["check-schema", "postgresql://h/db"]).exit_code == 2


def test_non_postgres_url_is_a_usage_error(invoke: Invoke) -> None:
    result = invoke(["check-schema", "sqlite:///x.db", "--models", MODELS])
    assert result.exit_code == 2
    assert "must be a postgresql:// URL" in result.stderr


def test_unreachable_database_exits_2_without_traceback(invoke: Invoke) -> None:
    url = f"postgresql://user:s3cret@127.0.0.1:{_closed_port()}/db"
    result = invoke(["check-schema", url, "--models", MODELS])
    assert result.exit_code == 2
    assert "cannot use the database at postgresql://user:***@127.0.0.1" in result.stderr
    assert "s3cret" not in result.output
    assert "Traceback" not in result.output
    assert "--verbose" in result.stderr


def test_verbose_shows_the_traceback(invoke: Invoke) -> None:
    url = f"postgresql://127.0.0.1:{_closed_port()}/db"
    result = invoke(["check-schema", url, "--models", MODELS, "--verbose"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def test_missing_database_is_a_database_error(invoke: Invoke, pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_database_here"
    result = invoke(["check-schema", missing, "--models", MODELS])
    assert result.exit_code == 2
    assert "database error at" in result.stderr
    assert "no_such_database_here" in result.stderr
