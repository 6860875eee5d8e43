from __future__ import annotations

from typing import Any

import pytest

from oversync_sa.client import (
    DEFAULT_RETRY_POLICY,
    BundleChangeWatchMode,
    ClientConfig,
    ConfigFieldError,
    RetryPolicy,
    SyncTable,
)
from oversync_sa.errors import ConfigurationError


def test_defaults_are_the_default_config_values() -> None:
    config = ClientConfig("business", (SyncTable("users", "id"),))
    assert (config.upload_limit, config.download_limit, config.snapshot_chunk_rows) == (
        1000,
        1000,
        1000,
    )
    assert (config.backoff_min, config.backoff_max) == (1.0, 60.0)
    assert config.retry_policy is None
    assert config.effective_retry_policy is DEFAULT_RETRY_POLICY
    assert config.bundle_change_watch_mode is BundleChangeWatchMode.OFF
    assert config.watch_fallback_interval == 60.0


def test_watch_mode_uses_go_string_values() -> None:
    assert [m.value for m in BundleChangeWatchMode] == ["off", "auto"]
    config = ClientConfig("s", (), bundle_change_watch_mode="auto")  # type: ignore[arg-type]
    assert config.bundle_change_watch_mode is BundleChangeWatchMode.AUTO


def test_non_positive_limits_fall_back_and_watch_interval_follows_backoff_max() -> None:
    config = ClientConfig(
        " s ",
        [SyncTable("t", "id")],  # type: ignore[arg-type]
        upload_limit=0,
        download_limit=-5,
        snapshot_chunk_rows=0,
        backoff_min=0,
        backoff_max=5,
        watch_fallback_interval=0,
    )
    assert config.schema == "s"
    assert isinstance(config.tables, tuple)
    assert (config.upload_limit, config.download_limit, config.snapshot_chunk_rows) == (
        1000,
        1000,
        1000,
    )
    assert (config.backoff_min, config.backoff_max, config.watch_fallback_interval) == (
        1.0,
        5.0,
        5.0,
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"schema": "  "}, "schema"),
        ({"schema": 3}, "schema"),
        ({"tables": SyncTable("t", "id")}, "tables"),
        ({"tables": ("users",)}, "tables[0]"),
        ({"upload_limit": True}, "upload_limit"),
        ({"download_limit": 1.5}, "download_limit"),
        ({"backoff_min": float("nan")}, "backoff_min"),
        ({"backoff_min": 10, "backoff_max": 2}, "backoff_max"),
        ({"retry_policy": {"enabled": False}}, "retry_policy"),
        ({"bundle_change_watch_mode": "sometimes"}, "bundle_change_watch_mode"),
        ({"watch_fallback_interval": "1s"}, "watch_fallback_interval"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"schema": "business", "tables": ()}
    arguments.update(kwargs)
    with pytest.raises(ConfigFieldError) as info:
        ClientConfig(**arguments)
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, ConfigurationError)


def test_schema_message_matches_the_protocol() -> None:
    with pytest.raises(ConfigFieldError, match=r"config\.Schema must be provided"):
        ClientConfig("", ())


def test_sync_table_resolves_key_columns() -> None:
    assert SyncTable(" Users ", "id").name == "users"
    assert SyncTable("t", "id").key_columns == ("id",)
    assert SyncTable("t", "ignored", [" a ", "", "A", "b"]).key_columns == ("a", "b")  # type: ignore[arg-type]
    assert SyncTable("t").key_columns == ()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"table_name": None}, "table_name"),
        ({"table_name": "t", "sync_key_column": 1}, "sync_key_column"),
        ({"table_name": "t", "sync_key_columns": "id"}, "sync_key_columns"),
        ({"table_name": "t", "sync_key_columns": ("id", 2)}, "sync_key_columns"),
        ({"table_name": "t", "download_only": "yes"}, "download_only"),
    ],
)
def test_sync_table_rejects_wrong_types(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigFieldError) as info:
        SyncTable(**kwargs)
    assert info.value.field == field


def test_config_table_lookup_is_case_insensitive() -> None:
    users = SyncTable("Users", "id")
    config = ClientConfig("s", (users,))
    assert config.table("USERS ") is users
    assert config.table("posts") is None


def test_retry_policy_default_and_normalisation() -> None:
    assert RetryPolicy(True, 3, 0.1, 1.0, 0.2) == DEFAULT_RETRY_POLICY
    policy = RetryPolicy(max_attempts=0, initial_backoff=0, max_backoff=-1, jitter_fraction=7)
    assert (policy.max_attempts, policy.initial_backoff, policy.max_backoff) == (3, 0.1, 1.0)
    assert policy.jitter_fraction == 1.0
    assert RetryPolicy(initial_backoff=2.0, max_backoff=0.5).max_backoff == 2.0
    assert RetryPolicy(jitter_fraction=-0.5).jitter_fraction == 0.0
    assert RetryPolicy(enabled=False).effective_attempts == 1
    assert RetryPolicy(max_attempts=5).effective_attempts == 5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"enabled": 1}, "retry_policy.enabled"),
        ({"max_attempts": 2.0}, "retry_policy.max_attempts"),
        ({"initial_backoff": "fast"}, "retry_policy.initial_backoff"),
        ({"max_backoff": float("inf")}, "retry_policy.max_backoff"),
        ({"jitter_fraction": float("nan")}, "retry_policy.jitter_fraction"),
    ],
)
def test_retry_policy_rejects_wrong_types(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigFieldError) as info:
        RetryPolicy(**kwargs)
    assert info.value.field == field


def test_config_is_frozen() -> None:
    config = ClientConfig("s", ())
    with pytest.raises(AttributeError):
        config.schema = "other"  # type: ignore[misc]
