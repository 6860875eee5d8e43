"""Pull's row resolution inlines the common key and payload cases; it must agree with the codecs."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from oversync_sa.client import pull as pull_mod
from oversync_sa.client.bulk_apply import ResolvedColumns
from oversync_sa.client.encoding import wire_key_codec, wire_payload_decoder
from oversync_sa.client.errors import (
    KeyEncodingError,
    PayloadEncodingError,
    ProtocolViolationError,
)
from oversync_sa.client.validation import ColumnInfo, KeyKind, TableInfo
from oversync_sa.wire import Bundle, BundleRow, Op, PullResponse

TEXT = TableInfo(
    "notes",
    (ColumnInfo("Id", "TEXT", 1), ColumnInfo("n", "INTEGER"), ColumnInfo("r", "REAL")),
    "Id",
    KeyKind.TEXT,
)
BLOBS = TableInfo(
    "files",
    (ColumnInfo("id", "BLOB", 1), ColumnInfo("data", "BLOB")),
    "id",
    KeyKind.UUID_BLOB,
)
UUID = "0b5d6c1e-8f3a-4c2b-9d7e-1a2b3c4d5e6f"


def _runtime() -> Any:
    tables = {info.name: info for info in (TEXT, BLOBS)}
    return SimpleNamespace(schema="app", managed=SimpleNamespace(table=tables.__getitem__))


def _row(table: str, key: Any, payload: Any, op: Op = Op.UPDATE) -> BundleRow:
    raw = msgspec.Raw(msgspec.json.encode(payload)) if payload is not None else msgspec.Raw()
    return BundleRow(schema="app", table=table, key=key, op=op, row_version=3, payload=raw)


def _update_row(**changes: Any) -> BundleRow:
    """A valid ``notes`` UPDATE with ``changes`` applied (to break one field at a time)."""
    fields: dict[str, Any] = {
        "schema": "app", "table": "notes", "key": {"id": "k"}, "op": Op.UPDATE,
        "row_version": 3, "payload": msgspec.Raw(b"{}"),
    }
    return BundleRow(**{**fields, **changes})


def _expected(rows: list[BundleRow]) -> dict[str, dict[str, Any]]:
    infos = {TEXT.name: TEXT, BLOBS.name: BLOBS}
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        info = infos[row.table]
        local_pk, key_json = wire_key_codec(info)(row.key)
        values = None if row.op is Op.DELETE else wire_payload_decoder(info)(row.payload, local_pk)
        out.setdefault(row.table, {})[key_json] = (local_pk, row.row_version, values)
    return out


def _as_rows(table_rows: Any) -> dict[str, Any]:
    if isinstance(table_rows, ResolvedColumns):  # distinct keys, one version, no deletes
        return {
            key_json: (json.loads(key_json)[TEXT.key_json_name], table_rows.version, values)
            for key_json, values in zip(table_rows.key_jsons, table_rows.values, strict=True)
        }
    return dict(table_rows)


def _resolved(rows: list[BundleRow]) -> dict[str, dict[str, Any]]:
    bundle = Bundle(bundle_seq=3, source_id="s", source_bundle_id=1, rows=rows)
    return {
        name: _as_rows(table_rows)
        for name, (_info, table_rows) in pull_mod._resolve(_runtime(), bundle).items()
    }


def test_inlined_paths_agree_with_the_codecs() -> None:
    keys = ["plain", 'quo"te', "back\\slash", "tab\tchar", "ünïcode", "line\u2028sep", ""]
    payloads = [
        {"id": "x", "n": 1, "r": 2.5},
        {"id": "x", "n": True, "r": None},  # bool binds as 1 (the general path)
        {"id": "x", "n": 2**70, "r": 1},  # beyond int64: bound as a float, like Go
        {"n": 1, "r": 2.5, "id": "x"},  # member order does not matter
    ]
    rows = [_row("notes", {"id": key}, payload) for key in keys for payload in payloads]
    rows += [
        _row("files", {"id": UUID}, {"id": UUID, "data": "aGk="}),  # BLOBs: the decoder
        _row("notes", {"id": "gone"}, None, Op.DELETE),
        _row("files", {"id": UUID.upper()}, None, Op.DELETE),
    ]
    assert _resolved(rows) == _expected(rows)


@pytest.mark.parametrize(
    ("row", "error"),
    [
        (_row("notes", {"id": "k"}, {"id": "k", "n": 1}), PayloadEncodingError),  # missing r
        (_row("notes", {"id": "k"}, {"id": "k", "n": 1, "r": 1, "x": 1}), PayloadEncodingError),
        (_row("notes", {"id": "k"}, {"id": "k", "n": [1], "r": 1}), PayloadEncodingError),
        (_row("notes", {"id": 7}, None, Op.DELETE), KeyEncodingError),
        (_row("files", {"id": "not-a-uuid"}, None, Op.DELETE), KeyEncodingError),
    ],
)
def test_inlined_paths_raise_the_codec_errors(row: BundleRow, error: type[Exception]) -> None:
    with pytest.raises(error):
        _resolved([row])


def _plain_run() -> list[BundleRow]:
    rows = [_row("notes", {"id": f"k{i}"}, {"id": f"k{i}", "n": i, "r": i / 4}) for i in range(6)]
    rows.insert(2, _row("notes", {"id": "k4"}, None, Op.DELETE))  # k4 deleted, then written
    rows.append(_row("notes", {"id": "k1"}, {"id": "k1", "n": -1, "r": None}))  # k1 again
    rows.append(_row("notes", {"id": "k9"}, None, Op.DELETE))
    return rows


def test_plain_runs_resolve_a_column_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain keys and payloads: the column-wise path alone, with the row-by-row results."""
    rows = _plain_run()
    expected = _expected(rows)

    def row_by_row(*_args: Any) -> None:
        raise AssertionError("a plain run went row by row")

    monkeypatch.setattr(pull_mod, "_resolve_rows", row_by_row)
    resolved = _resolved(rows)
    assert resolved == expected
    # A later row for a key replaces the earlier one but keeps its position.
    assert list(resolved["notes"]) == [
        '{"id":"k0"}',
        '{"id":"k1"}',
        '{"id":"k4"}',
        '{"id":"k2"}',
        '{"id":"k3"}',
        '{"id":"k5"}',
        '{"id":"k9"}',
    ]


@pytest.mark.parametrize(
    "odd",
    [
        _row("notes", {"id": 'quo"te'}, {"id": "x", "n": 1, "r": 2.5}),  # key to escape
        _row("notes", {"id": "tab\tchar"}, {"id": "x", "n": 1, "r": 2.5}),  # not printable
        _row("notes", {"other": "k"}, None, Op.DELETE),  # no key member: the codec's error
        _row("notes", {"id": "b"}, {"id": "b", "n": True, "r": None}),  # bool: general path
        _row("notes", {"id": "c"}, {"id": "c", "n": 2**70, "r": 1}),  # beyond int64
        BundleRow(
            schema="app",
            table="notes",
            key={"id": "d"},
            op=Op.UPDATE,
            row_version=3,
            payload={"id": "d", "n": 1, "r": 2},  # type: ignore[arg-type]  # a decoded dict
        ),
    ],
)
def test_an_unusual_row_sends_its_run_row_by_row(
    odd: BundleRow, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _plain_run()
    rows.insert(3, odd)
    row_by_row: list[int] = []
    original = pull_mod._resolve_rows

    def spy(entry: Any, run: list[BundleRow]) -> None:
        row_by_row.append(len(run))
        original(entry, run)

    monkeypatch.setattr(pull_mod, "_resolve_rows", spy)
    try:
        expected = _expected(rows)
    except KeyEncodingError:
        with pytest.raises(KeyEncodingError):
            _resolved(rows)
        return
    assert _resolved(rows) == expected
    assert row_by_row == [len(rows)]


def test_a_bad_payload_in_a_plain_run_names_its_table_and_key() -> None:
    rows = _plain_run()
    rows.insert(4, _row("notes", {"id": "bad"}, {"id": "bad", "n": 1}))  # missing column r
    with pytest.raises(PayloadEncodingError) as info:
        _resolved(rows)
    assert (info.value.table, info.value.key) == ("notes", "bad")


def test_runs_of_several_tables_keep_first_seen_order() -> None:
    notes = _plain_run()
    rows = [*notes[:3], _row("files", {"id": UUID}, {"id": UUID, "data": "aGk="}), *notes[3:]]
    resolved = _resolved(rows)
    assert resolved == _expected(rows)
    assert list(resolved) == ["notes", "files"]


def _page(*rows: BundleRow) -> PullResponse:
    bundles = [Bundle(bundle_seq=1, source_id="s", source_bundle_id=1, rows=list(rows))]
    return PullResponse(stable_bundle_seq=1, bundles=bundles, has_more=False)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_row("notes", {"id": "k"}, {"id": "k"}), None),
        (_update_row(schema=""), "has an invalid row for 'notes'"),
        (_update_row(key={}), "has an invalid row for 'notes'"),
        (_update_row(row_version=0), "has an invalid row for 'notes'"),
        (_row("notes", {"id": "k"}, None, Op.UPDATE), "UPDATE row for 'notes' lacks payload"),
        (_row("notes", {"id": "k"}, None, Op.DELETE), None),
    ],
)
def test_page_rows_are_validated(bad: BundleRow, message: str | None) -> None:
    rows = _plain_run()
    rows.insert(3, bad)
    if message is None:
        pull_mod.validate_pull_page(_page(*rows), 0)
        return
    with pytest.raises(ProtocolViolationError, match=f"bundle 1 .*{message}"):
        pull_mod.validate_pull_page(_page(*rows), 0)


def test_a_bundle_of_one_table_stays_in_columns() -> None:
    """Distinct keys, one version, no deletes: no per-row tuple or dict, same rows."""
    rows = [_row("notes", {"id": f"k{i}"}, {"id": f"k{i}", "n": i, "r": i / 4}) for i in range(5)]
    bundle = Bundle(bundle_seq=3, source_id="s", source_bundle_id=1, rows=rows)
    ((_info, columns),) = pull_mod._resolve(_runtime(), bundle).values()
    assert isinstance(columns, ResolvedColumns)
    assert columns.version == 3
    assert _resolved(rows) == _expected(rows)


@pytest.mark.parametrize(
    "other",
    [
        _row("notes", {"id": "k1"}, {"id": "k1", "n": 9, "r": None}),  # a key written twice
        _row("notes", {"id": "k9"}, None, Op.DELETE),  # a delete
        BundleRow(  # another version
            schema="app",
            table="notes",
            key={"id": "k8"},
            op=Op.UPDATE,
            row_version=4,
            payload=msgspec.Raw(b'{"id":"k8","n":1,"r":1}'),
        ),
    ],
)
def test_other_bundles_of_one_table_are_keyed_rows(other: BundleRow) -> None:
    rows = [_row("notes", {"id": f"k{i}"}, {"id": f"k{i}", "n": i, "r": i / 4}) for i in range(5)]
    rows.insert(2, other)
    bundle = Bundle(bundle_seq=3, source_id="s", source_bundle_id=1, rows=rows)
    ((_info, table_rows),) = pull_mod._resolve(_runtime(), bundle).values()
    assert isinstance(table_rows, dict)
    assert _resolved(rows) == _expected(rows)
