"""``oversync-sa prune``: a retention maintenance run over real history."""

from __future__ import annotations

import json

import pytest

from tests.cli._support import MODELS, commit_bundles, create_tables, run_sql
from tests.cli.conftest import Invoke

pytestmark = pytest.mark.postgres

_BUNDLES_PER_USER = "SELECT count(*) FROM sync.bundle_log GROUP BY user_pk ORDER BY user_pk"
_FLOORS = "SELECT retained_bundle_floor FROM sync.user_state ORDER BY user_pk"


@pytest.fixture
def history(pg_url: str) -> str:
    """alice has 5 committed bundles, bob 3; the default window keeps all of them."""
    create_tables(pg_url)
    commit_bundles(pg_url, {"alice": 5, "bob": 3})
    assert run_sql(pg_url, _BUNDLES_PER_USER) == [5, 3]
    return pg_url


def test_prune_json_summary_and_effect(invoke: Invoke, history: str) -> None:
    result = invoke(["prune", history, "--models", MODELS, "--window", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "bundles_deleted": 4,
        "floors_advanced": 2,
        "retained_bundles_per_user": 2,
        "retention_prune_batch_size": 1000,
        "transactions": 1,
    }
    assert run_sql(history, _BUNDLES_PER_USER) == [2, 2]
    assert run_sql(history, _FLOORS) == [3, 1]

    again = invoke(["prune", history, "--window", "2", "--json"])
    assert again.exit_code == 0
    assert json.loads(again.stdout)["bundles_deleted"] == 0


def test_prune_batches_floor_advances(invoke: Invoke, history: str) -> None:
    # batch 1 moves each floor by at most one per transaction; one user per transaction.
    args = ["prune", history, "--window", "1", "--batch", "1", "--users-per-transaction", "1"]
    result = invoke([*args, "--max-transactions", "2", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["transactions"] == 2
    rest = invoke([*args, "--json"])
    summary = json.loads(rest.stdout)
    assert summary["bundles_deleted"] == (4 + 2) - 2
    assert run_sql(history, _BUNDLES_PER_USER) == [1, 1]


def test_prune_shows_progress_and_summary(invoke: Invoke, history: str) -> None:
    result = invoke(["prune", history, "--window", "1"])
    assert result.exit_code == 0, result.output
    assert "pruning history" in result.stdout
    assert "6/6" in result.stdout
    assert "done: deleted 6 bundle(s), advanced 2 floor(s) in 1 transaction(s) (window 1)" in (
        result.stdout
    )


def test_prune_without_sync_layout_exits_2(invoke: Invoke, pg_url: str) -> None:
    result = invoke(["prune", pg_url, "--json"])
    assert result.exit_code == 2
    assert "no sync layout" in result.stderr
    assert result.stdout == ""


def test_prune_rejects_bad_options(invoke: Invoke, pg_url: str) -> None:
    assert invoke(["prune", pg_url, "--window", "-1"]).exit_code == 2
    assert invoke(["prune", pg_url, "--users-per-transaction", "0"]).exit_code == 2
    bad = invoke(["prune", pg_url, "--models", "tests.cli._models:Nope"])
    assert bad.exit_code == 2
    assert "has no attribute 'Nope'" in bad.stderr
