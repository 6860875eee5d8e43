"""ServiceConfig normalisation (SERVER.md §2.1, Appendix C), knob by knob."""

from __future__ import annotations

from datetime import timedelta

import pytest

from oversync_sa.errors import ConfigurationError
from oversync_sa.server import BundleChangeWatchConfig, RegisteredTable, ServiceConfig
from oversync_sa.server.bootstrap import assign_table_ids
from oversync_sa.server.dependency_order import dependency_order


def test_registered_table_normalisation() -> None:
    t = RegisteredTable("  Business ", " Users ", sync_key_columns=[" ID", "", "id"])
    assert (t.schema, t.table, t.sync_key_column, t.name) == (
        "business",
        "users",
        "id",
        "business.users",
    )
    assert RegisteredTable("", "t", "Id").schema == "public"


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"sync_key_columns": ["a", "b"]}, "exactly one sync key column"),
        ({"sync_key_columns": []}, "exactly one sync key column"),
        ({}, "exactly one sync key column"),
        ({"sync_key_column": "_SYNC_SCOPE_ID"}, "cannot use hidden scope column"),
        ({"sync_key_column": "a", "sync_key_columns": ["a"]}, "not both"),
    ],
)
def test_registered_table_key_errors(kwargs: dict[str, object], phrase: str) -> None:
    with pytest.raises(ConfigurationError, match=phrase):
        RegisteredTable("s", "t", **kwargs)  # type: ignore[arg-type]


def test_registered_table_empty_name() -> None:
    with pytest.raises(ConfigurationError, match="table name"):
        RegisteredTable("s", " ", "id")


def test_duplicate_registration_rejected() -> None:
    with pytest.raises(ConfigurationError, match="registered twice"):
        ServiceConfig(
            registered_tables=(RegisteredTable("S", "t", "id"), RegisteredTable("s", "T", "id"))
        )


def test_wrong_registered_table_type_rejected() -> None:
    with pytest.raises(ConfigurationError, match="registered_tables"):
        ServiceConfig(registered_tables=(("s", "t"),))  # type: ignore[arg-type]


def test_defaults() -> None:
    c = ServiceConfig()
    assert (c.app_name, c.max_supported_schema_version) == ("go-oversync-app", 1)
    assert (c.max_rows_per_bundle, c.max_bytes_per_bundle) == (0, 0)
    assert (c.default_rows_per_push_chunk, c.max_rows_per_push_chunk) == (1000, 5000)
    assert (c.default_rows_per_committed_bundle_chunk, c.max_rows_per_committed_bundle_chunk) == (
        1000,
        5000,
    )
    assert (c.default_rows_per_snapshot_chunk, c.max_rows_per_snapshot_chunk) == (1000, 5000)
    assert (
        c.push_session_ttl
        == c.initialization_lease_ttl
        == c.snapshot_session_ttl
        == timedelta(minutes=15)
    )
    assert (c.retained_bundles_per_user, c.retention_prune_batch_size) == (10000, 1000)
    assert c.upload_lock_timeout == timedelta(0)
    assert not c.upload_lock_timeout_enabled
    assert c.bundle_change_watch == BundleChangeWatchConfig(
        False, "oversync_bundle_change_v1", timedelta(seconds=25)
    )


@pytest.mark.parametrize(
    ("knob", "default"),
    [
        ("default_rows_per_push_chunk", 1000),
        ("max_rows_per_push_chunk", 5000),
        ("default_rows_per_committed_bundle_chunk", 1000),
        ("max_rows_per_committed_bundle_chunk", 5000),
        ("default_rows_per_snapshot_chunk", 1000),
        ("max_rows_per_snapshot_chunk", 5000),
        ("retained_bundles_per_user", 10000),
        ("retention_prune_batch_size", 1000),
    ],
)
@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_int_knobs_fall_back(knob: str, default: int, bad: int) -> None:
    assert getattr(ServiceConfig(**{knob: bad}), knob) == default  # type: ignore[arg-type]
    assert getattr(ServiceConfig(**{knob: 7}), knob) == 7  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "knob", ["push_session_ttl", "initialization_lease_ttl", "snapshot_session_ttl"]
)
@pytest.mark.parametrize("bad", [timedelta(0), timedelta(seconds=-1)])
def test_non_positive_ttls_fall_back(knob: str, bad: timedelta) -> None:
    assert getattr(ServiceConfig(**{knob: bad}), knob) == timedelta(minutes=15)  # type: ignore[arg-type]
    assert getattr(ServiceConfig(**{knob: timedelta(seconds=5)}), knob) == timedelta(seconds=5)  # type: ignore[arg-type]


def test_knobs_used_as_given() -> None:
    c = ServiceConfig(
        app_name="",
        max_supported_schema_version=0,
        max_rows_per_bundle=-1,
        max_bytes_per_bundle=0,
        max_rows_per_snapshot_session=-5,
        max_bytes_per_snapshot_session=0,
        upload_lock_timeout=timedelta(seconds=-1),
    )
    assert (c.app_name, c.max_supported_schema_version, c.max_rows_per_bundle) == ("", 0, -1)
    assert (c.max_rows_per_snapshot_session, c.max_bytes_per_snapshot_session) == (-5, 0)
    assert not c.upload_lock_timeout_enabled
    assert ServiceConfig(upload_lock_timeout=timedelta(seconds=2)).upload_lock_timeout_enabled


def test_dependency_overrides_normalised() -> None:
    c = ServiceConfig(dependency_overrides={" B.Child ": ["B.Parent"]})
    assert c.dependency_overrides == {"b.child": ("b.parent",)}


def test_watch_config() -> None:
    w = BundleChangeWatchConfig(enabled=True, notify_channel="", heartbeat_interval=timedelta(0))
    assert (w.notify_channel, w.heartbeat_interval) == (
        "oversync_bundle_change_v1",
        timedelta(seconds=25),
    )
    assert BundleChangeWatchConfig(
        heartbeat_interval=timedelta(seconds=-1)
    ).heartbeat_interval < timedelta(0)


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"notify_channel": "a\x00b"}, "NUL"),
        ({"notify_channel": "x" * 64}, "63 bytes"),
        ({"notify_channel": "é" * 32}, "63 bytes"),
        (
            {"enabled": True, "heartbeat_interval": timedelta(seconds=-1)},
            "heartbeat interval must be positive",
        ),
    ],
)
def test_watch_config_errors(kwargs: dict[str, object], phrase: str) -> None:
    with pytest.raises(ConfigurationError, match=phrase):
        BundleChangeWatchConfig(**kwargs)  # type: ignore[arg-type]


def test_table_ids_are_bytewise_sorted() -> None:
    tables = [
        RegisteredTable("business", n, "id")
        for n in ("files", "file_reviews", "categories", "Zeta")
    ]
    assert assign_table_ids(tables) == {
        "business.categories": 1,
        "business.file_reviews": 2,
        "business.files": 3,
        "business.zeta": 4,
    }


def test_dependency_order_cycles_ties_and_overrides() -> None:
    tables = ["s.a", "s.b", "s.c", "s.d", "public.e"]
    edges = {"s.b": ["s.c"], "s.c": ["s.b", "s.a"], "s.a": ["s.a", "s.unregistered"]}
    assert dependency_order(tables, edges) == ("public.e", "s.a", "s.b", "s.c", "s.d")
    assert dependency_order(tables, edges, {"E": ["s.d"], "s.x": ["s.a"], "bad.name.x": []}) == (
        "s.a",
        "s.b",
        "s.c",
        "s.d",
        "public.e",
    )
