"""Wire models: exact member order and omission (SERVER.md Appendix B, §11.21), yaml drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from oversync_sa import wire as w

_RAW = msgspec.Raw(b'{"a":1}')
_KEY = {"id": "k"}
_ZERO_LIMITS = w.BundleCapabilitiesLimits()
_FEATURES_OFF = w.SyncFeatures()


def _enc(body: msgspec.Struct) -> str:
    return msgspec.json.encode(body).decode()


def _row(**extra: Any) -> w.BundleRow:
    return w.BundleRow(schema="s", table="t", key=_KEY, op=w.Op.DELETE, row_version=0, **extra)


_FALSE_FLAGS = ",".join(f'"{name}":false' for name in sorted(w.SyncFeatures.__struct_fields__))
_STATUS_ZERO = (
    '{"status":"healthy","version":"","app_name":"","lifecycle":"running",'
    '"accepting_operations":false,"inflight_operations":0,"registered_tables":[],'
    '"features":{' + _FALSE_FLAGS + '},"user_state_retention_floor_ahead_count":0,'
    '"latest_bundle_seq_max":0,"retained_bundle_floor_min":0,"retained_bundle_floor_max":0,'
    '"retained_bundle_window_min":0,"retained_bundle_window_max":0,'
    '"history_pruned_error_count":0,"accepted_push_replay_count":0,'
    '"rejected_registered_write_count":0,"committed_bundle_count":0,"committed_bundle_bytes":0}'
)

# (body, exact JSON) pairs: a zero/empty instance and a full one per response model.
_CASES: list[tuple[msgspec.Struct, str]] = [
    (w.ErrorResponse(error="", message=""), '{"error":"","message":""}'),
    (w.ErrorResponse(error="pull_failed", message="m"), '{"error":"pull_failed","message":"m"}'),
    (w.SourceRetiredResponse(error="source_retired", message="", source_id=""),
     '{"error":"source_retired","message":"","source_id":""}'),
    (w.SourceRetiredResponse(error="source_retired", message="m", source_id="a",
                             replaced_by_source_id="b"),
     '{"error":"source_retired","message":"m","source_id":"a","replaced_by_source_id":"b"}'),
    (w.PushConflictResponse(error="push_conflict", message=""),
     '{"error":"push_conflict","message":""}'),
    (w.PushConflictResponse(error="push_conflict", message="m", conflict=w.PushConflictDetails(
        schema="", table="", key={}, op=w.Op.INSERT, base_row_version=0, server_row_version=0,
        server_row_deleted=False)),
     '{"error":"push_conflict","message":"m","conflict":{"schema":"","table":"","key":{},'
     '"op":"INSERT","base_row_version":0,"server_row_version":0,"server_row_deleted":false,'
     '"server_row":null}}'),
    (w.PushConflictDetails(schema="s", table="t", key=_KEY, op=w.Op.UPDATE, base_row_version=3,
                           server_row_version=7, server_row_deleted=True, server_row=_RAW),
     '{"schema":"s","table":"t","key":{"id":"k"},"op":"UPDATE","base_row_version":3,'
     '"server_row_version":7,"server_row_deleted":true,"server_row":{"a":1}}'),
    (w.ConnectResponse(resolution=w.ConnectResolution.INITIALIZE_EMPTY),
     '{"resolution":"initialize_empty"}'),
    (w.ConnectResponse(resolution=w.ConnectResolution.RETRY_LATER, initialization_id="i",
                       lease_expires_at="2026-03-22T12:00:00Z", retry_after_seconds=5),
     '{"resolution":"retry_later","initialization_id":"i",'
     '"lease_expires_at":"2026-03-22T12:00:00Z","retry_after_seconds":5}'),
    (w.PushSessionCreateResponse(status=w.PushSessionStatus.STAGING, push_id="p",
                                 planned_row_count=3),
     '{"push_id":"p","status":"staging","planned_row_count":3}'),
    (w.PushSessionCreateResponse(status=w.PushSessionStatus.ALREADY_COMMITTED, push_id="p",
                                 planned_row_count=3, next_expected_row_ordinal=1, bundle_seq=4,
                                 source_id="s", source_bundle_id=5, row_count=6, bundle_hash="h"),
     '{"push_id":"p","status":"already_committed","planned_row_count":3,'
     '"next_expected_row_ordinal":1,"bundle_seq":4,"source_id":"s","source_bundle_id":5,'
     '"row_count":6,"bundle_hash":"h"}'),
    (w.PushSessionChunkResponse(push_id="", next_expected_row_ordinal=0),
     '{"push_id":"","next_expected_row_ordinal":0}'),
    (w.PushSessionCommitResponse(bundle_seq=0, source_id="", source_bundle_id=0, row_count=0,
                                 bundle_hash=""),
     '{"bundle_seq":0,"source_id":"","source_bundle_id":0,"row_count":0,"bundle_hash":""}'),
    (w.CommittedBundleRowsResponse(bundle_seq=0, source_id="", source_bundle_id=0, row_count=0,
                                   bundle_hash="", rows=[], next_row_ordinal=0, has_more=False),
     '{"bundle_seq":0,"source_id":"","source_bundle_id":0,"row_count":0,"bundle_hash":"",'
     '"rows":[],"next_row_ordinal":0,"has_more":false}'),
    (w.CommittedBundleRowsResponse(bundle_seq=1, source_id="s", source_bundle_id=2, row_count=1,
                                   bundle_hash="h", rows=[_row()], next_row_ordinal=0,
                                   has_more=True),
     '{"bundle_seq":1,"source_id":"s","source_bundle_id":2,"row_count":1,"bundle_hash":"h",'
     '"rows":[{"schema":"s","table":"t","key":{"id":"k"},"op":"DELETE","row_version":0}],'
     '"next_row_ordinal":0,"has_more":true}'),
    (_row(), '{"schema":"s","table":"t","key":{"id":"k"},"op":"DELETE","row_version":0}'),
    (_row(payload=_RAW),
     '{"schema":"s","table":"t","key":{"id":"k"},"op":"DELETE","row_version":0,"payload":{"a":1}}'),
    (w.PullResponse(stable_bundle_seq=0, bundles=[], has_more=False),
     '{"stable_bundle_seq":0,"bundles":[],"has_more":false}'),
    (w.PullResponse(stable_bundle_seq=9, has_more=True, bundles=[
        w.Bundle(bundle_seq=1, source_id="s", source_bundle_id=2, rows=[]),
        w.Bundle(bundle_seq=2, source_id="s", source_bundle_id=3, row_count=1, bundle_hash="h",
                 rows=[_row()])]),
     '{"stable_bundle_seq":9,"bundles":[{"bundle_seq":1,"source_id":"s","source_bundle_id":2,'
     '"rows":[]},{"bundle_seq":2,"source_id":"s","source_bundle_id":3,"row_count":1,'
     '"bundle_hash":"h","rows":[{"schema":"s","table":"t","key":{"id":"k"},"op":"DELETE",'
     '"row_version":0}]}],"has_more":true}'),
    (w.SnapshotSession(snapshot_id="", snapshot_bundle_seq=0, row_count=0, expires_at=""),
     '{"snapshot_id":"","snapshot_bundle_seq":0,"row_count":0,"expires_at":""}'),
    (w.SnapshotSession(snapshot_id="x", snapshot_bundle_seq=1, row_count=2, byte_count=3,
                       expires_at="2026-03-22T12:00:00Z"),
     '{"snapshot_id":"x","snapshot_bundle_seq":1,"row_count":2,"byte_count":3,'
     '"expires_at":"2026-03-22T12:00:00Z"}'),
    (w.SnapshotChunkResponse(snapshot_id="", snapshot_bundle_seq=0, rows=[], next_row_ordinal=0,
                             has_more=False),
     '{"snapshot_id":"","snapshot_bundle_seq":0,"rows":[],"next_row_ordinal":0,'
     '"has_more":false}'),
    # Raw payloads are embedded verbatim (jsonb text keeps its spaces and key order).
    (w.SnapshotRow(schema="s", table="t", key=_KEY, row_version=0,
                   payload=msgspec.Raw(b'{"b": 1, "a": 2}')),
     '{"schema":"s","table":"t","key":{"id":"k"},"row_version":0,"payload":{"b": 1, "a": 2}}'),
    (w.CapabilitiesResponse(protocol_version="", schema_version=0, features=_FEATURES_OFF),
     '{"protocol_version":"","schema_version":0,"features":{' + _FALSE_FLAGS + "}}"),
    (w.CapabilitiesResponse(protocol_version="v1", schema_version=1, features=_FEATURES_OFF,
                            bundle_limits=_ZERO_LIMITS),
     '{"protocol_version":"v1","schema_version":1,"features":{' + _FALSE_FLAGS
     + '},"bundle_limits":{}}'),
    (w.RegisteredTableSpec(schema="s", table="t"), '{"schema":"s","table":"t"}'),
    (w.RegisteredTableSpec(schema="s", table="t", sync_key_columns=["id"]),
     '{"schema":"s","table":"t","sync_key_columns":["id"]}'),
    (w.StatusResponse(status=w.HealthStatus.HEALTHY, version="", app_name="",
                      lifecycle=w.LifecycleState.RUNNING, accepting_operations=False,
                      inflight_operations=0, registered_tables=[], features=_FEATURES_OFF,
                      user_state_retention_floor_ahead_count=0, latest_bundle_seq_max=0,
                      retained_bundle_floor_min=0, retained_bundle_floor_max=0,
                      retained_bundle_window_min=0, retained_bundle_window_max=0,
                      history_pruned_error_count=0, accepted_push_replay_count=0,
                      rejected_registered_write_count=0, committed_bundle_count=0,
                      committed_bundle_bytes=0),
     _STATUS_ZERO),
    (w.BundleChangeEvent(bundle_seq=1), '{"bundle_seq":1}'),
    (w.BundleChangeEvent(bundle_seq=1, source_id="s", source_bundle_id=2),
     '{"bundle_seq":1,"source_id":"s","source_bundle_id":2}'),
    (w.BundleChangeNotification(user_pk=0, bundle_seq=0), '{"user_pk":0,"bundle_seq":0}'),
    (w.BundleChangeNotification(user_pk=1, bundle_seq=2, source_id="s", source_bundle_id=3),
     '{"user_pk":1,"bundle_seq":2,"source_id":"s","source_bundle_id":3}'),
    # Requests (the client encodes them).
    (w.ConnectRequest(), '{"has_local_pending_rows":false}'),
    (w.PushSessionCreateRequest(source_bundle_id=1, planned_row_count=2),
     '{"source_bundle_id":1,"planned_row_count":2}'),
    (w.PushSessionCreateRequest(source_bundle_id=1, planned_row_count=2, initialization_id="i"),
     '{"source_bundle_id":1,"planned_row_count":2,"initialization_id":"i"}'),
    (w.PushSessionChunkRequest(start_row_ordinal=0, rows=[
        w.PushRequestRow(schema="s", table="t", key=_KEY, op="DELETE", base_row_version=0),
        w.PushRequestRow(schema="s", table="t", key=_KEY, op="INSERT", base_row_version=0,
                         payload=_RAW)]),
     '{"start_row_ordinal":0,"rows":[{"schema":"s","table":"t","key":{"id":"k"},"op":"DELETE",'
     '"base_row_version":0},{"schema":"s","table":"t","key":{"id":"k"},"op":"INSERT",'
     '"base_row_version":0,"payload":{"a":1}}]}'),
    (w.SnapshotSessionCreateRequest(), "{}"),
    (w.SnapshotSessionCreateRequest(source_replacement=w.SnapshotSourceReplacement(
        previous_source_id="a", new_source_id="b",
        reason=w.SourceReplacementReason.HISTORY_PRUNED)),
     '{"source_replacement":{"previous_source_id":"a","new_source_id":"b",'
     '"reason":"history_pruned"}}'),
]


@pytest.mark.parametrize(("body", "expected"), _CASES,
                         ids=[f"{type(b).__name__}-{i}" for i, (b, _) in enumerate(_CASES)])
def test_exact_encoding_and_round_trip(body: msgspec.Struct, expected: str) -> None:
    assert _enc(body) == expected
    decoded = msgspec.json.decode(expected, type=type(body))
    assert _enc(decoded) == expected


def test_full_bundle_limits_and_capabilities() -> None:
    names = w.BundleCapabilitiesLimits.__struct_fields__
    limits = w.BundleCapabilitiesLimits(**{n: i + 1 for i, n in enumerate(names)})
    caps = w.CapabilitiesResponse(
        protocol_version="v1", schema_version=1, app_name="app", registered_tables=["b.c"],
        registered_table_specs=[w.RegisteredTableSpec(schema="b", table="c",
                                                      sync_key_columns=["id"])],
        features=w.SyncFeatures.server_defaults(bundle_change_watch=True), bundle_limits=limits)
    text = _enc(caps)
    limits_text = ",".join(f'"{n}":{i + 1}' for i, n in enumerate(names))
    assert text.startswith(
        '{"protocol_version":"v1","schema_version":1,"app_name":"app",'
        '"registered_tables":["b.c"],"registered_table_specs":[{"schema":"b","table":"c",'
        '"sync_key_columns":["id"]}],"features":{'
    )
    assert text.endswith('},"bundle_limits":{' + limits_text + "}}")
    assert names[0] == "max_rows_per_bundle"
    assert names[-1] == "initialization_lease_ttl_seconds"


def test_server_default_features() -> None:
    flags = msgspec.to_builtins(w.SyncFeatures.server_defaults(bundle_change_watch=False))
    assert len(flags) == 20
    assert list(flags) == sorted(flags)  # Go writes the map with sorted keys
    assert "push_sessions" not in flags
    assert {k for k, v in flags.items() if not v} == {"bundle_change_watch",
                                                       "server_checkpoint_tracking"}
    on = w.SyncFeatures.server_defaults(bundle_change_watch=True)
    assert on.bundle_change_watch
    assert on.connect_lifecycle


def test_missing_feature_flags_decode_as_false() -> None:
    features = msgspec.json.decode(b'{"bundle_pull":true,"future_flag":true}',
                                   type=w.SyncFeatures)
    assert features.bundle_pull
    assert not features.connect_lifecycle


def test_delete_payload_absent_vs_explicit_null() -> None:
    absent = msgspec.json.decode(
        b'{"schema":"s","table":"t","key":{},"op":"DELETE","base_row_version":0}',
        type=w.PushRequestRow)
    null = msgspec.json.decode(
        b'{"schema":"s","table":"t","key":{},"op":"DELETE","base_row_version":0,"payload":null}',
        type=w.PushRequestRow)
    assert len(absent.payload) == 0
    assert bytes(null.payload) == b"null"


def test_push_request_key_values_are_not_validated_by_the_model() -> None:
    row = msgspec.json.decode(
        b'{"schema":"s","table":"t","key":{"id":1},"op":"insert","base_row_version":0}',
        type=w.PushRequestRow)
    assert row.key == {"id": 1}
    assert row.op == "insert"


@pytest.mark.parametrize(
    ("data", "body_type"),
    [
        (b'{"resolution":"maybe"}', w.ConnectResponse),
        (b'{"schema":"s","table":"t","key":{},"op":"UPSERT","row_version":1}', w.BundleRow),
        (b'{"source_replacement":null,"extra":1}', w.SnapshotSessionCreateRequest),
        (b'{"previous_source_id":"a","new_source_id":"b","reason":"x"}',
         w.SnapshotSourceReplacement),
        (b'{"error":"other","message":"","source_id":"s"}', w.SourceRetiredResponse),
    ],
)
def test_strict_decoding_rejects_bad_values(data: bytes, body_type: type[Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(data, type=body_type)


# ---------------------------------------------------------------------- drift vs the yaml

_YAML = Path("/work/shared/spec/two_way_sync.yaml")
_STRUCT_FOR_SCHEMA: dict[str, type[msgspec.Struct]] = {
    "BundleRow": w.BundleRow,
    "Bundle": w.Bundle,
    "PushRequestRow": w.PushRequestRow,
    "PushSessionCreateRequest": w.PushSessionCreateRequest,
    "ConnectRequest": w.ConnectRequest,
    "ConnectResponse": w.ConnectResponse,
    "PushSessionCreateStagingResponse": w.PushSessionCreateResponse,
    "PushSessionCreateAlreadyCommittedResponse": w.PushSessionCreateResponse,
    "PushSessionChunkRequest": w.PushSessionChunkRequest,
    "PushSessionChunkResponse": w.PushSessionChunkResponse,
    "PushSessionCommitResponse": w.PushSessionCommitResponse,
    "PullResponse": w.PullResponse,
    "SnapshotRow": w.SnapshotRow,
    "SnapshotSessionCreateRequest": w.SnapshotSessionCreateRequest,
    "SnapshotSourceReplacement": w.SnapshotSourceReplacement,
    "CommittedBundleRowsResponse": w.CommittedBundleRowsResponse,
    "SnapshotSession": w.SnapshotSession,
    "SnapshotChunkResponse": w.SnapshotChunkResponse,
    "BundleCapabilitiesLimits": w.BundleCapabilitiesLimits,
    "RegisteredTableSpec": w.RegisteredTableSpec,
    "BundleChangeEvent": w.BundleChangeEvent,
    "CapabilitiesResponse": w.CapabilitiesResponse,
    "ErrorResponse": w.ErrorResponse,
    "SourceRetiredResponse": w.SourceRetiredResponse,
    "PushConflictResponse": w.PushConflictResponse,
    "PushConflictDetails": w.PushConflictDetails,
    "StatusResponse": w.StatusResponse,
}
# Schemas without properties of their own.
_NO_STRUCT = {"SyncKey", "BundleHash", "PushSessionCreateResponse"}


@pytest.fixture(scope="module")
def yaml_schemas() -> dict[str, Any]:
    if not _YAML.exists():
        pytest.skip(f"contract not available at {_YAML} (only in the development workspace)")
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(_YAML.read_text("utf-8"))
    schemas: dict[str, Any] = doc["components"]["schemas"]
    return schemas


def test_every_yaml_schema_has_a_struct(yaml_schemas: dict[str, Any]) -> None:
    assert set(yaml_schemas) == set(_STRUCT_FOR_SCHEMA) | _NO_STRUCT


@pytest.mark.parametrize("schema_name", sorted(_STRUCT_FOR_SCHEMA))
def test_yaml_properties_exist_on_struct(yaml_schemas: dict[str, Any], schema_name: str) -> None:
    schema = yaml_schemas[schema_name]
    fields = set(_STRUCT_FOR_SCHEMA[schema_name].__struct_fields__)
    assert set(schema.get("properties", {})) <= fields
    assert set(schema.get("required", [])) <= fields


def test_yaml_enums_match(yaml_schemas: dict[str, Any]) -> None:
    def enum_of(schema: str, prop: str) -> set[str]:
        return set(yaml_schemas[schema]["properties"][prop]["enum"])

    assert enum_of("ConnectResponse", "resolution") == set(w.ConnectResolution)
    assert enum_of("BundleRow", "op") == set(w.Op)
    assert enum_of("SnapshotSourceReplacement", "reason") == set(w.SourceReplacementReason)
    assert enum_of("StatusResponse", "status") == set(w.HealthStatus)
    assert enum_of("StatusResponse", "lifecycle") == set(w.LifecycleState)
    assert (enum_of("PushSessionCreateStagingResponse", "status")
            | enum_of("PushSessionCreateAlreadyCommittedResponse", "status")) == set(
        w.PushSessionStatus)
    features = yaml_schemas["CapabilitiesResponse"]["properties"]["features"]["example"]
    assert set(features) <= set(w.SyncFeatures.__struct_fields__)
