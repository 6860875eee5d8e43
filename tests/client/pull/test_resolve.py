"""Pull's row resolution inlines the common key and payload cases; it must agree with the codecs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from oversync_sa.client import pull as pull_mod
from oversync_sa.client.encoding import wire_key_codec, wire_payload_decoder
from oversync_sa.client.errors import KeyEncodingError, PayloadEncodingError
from oversync_sa.client.validation import ColumnInfo, KeyKind, TableInfo
from oversync_sa.wire import Bundle, BundleRow, Op

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


def _expected(rows: list[BundleRow]) -> dict[str, dict[str, Any]]:
    infos = {TEXT.name: TEXT, BLOBS.name: BLOBS}
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        info = infos[row.table]
        local_pk, key_json = wire_key_codec(info)(row.key)
        values = None if row.op is Op.DELETE else wire_payload_decoder(info)(row.payload, local_pk)
        out.setdefault(row.table, {})[key_json] = (local_pk, row.row_version, values)
    return out


def _resolved(rows: list[BundleRow]) -> dict[str, dict[str, Any]]:
    bundle = Bundle(bundle_seq=3, source_id="s", source_bundle_id=1, rows=rows)
    return {
        name: dict(table_rows)
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
