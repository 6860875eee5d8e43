"""Local <-> wire encodings of keys and payloads (CLIENT.md §3.4-3.6).

Three encodings meet here:

* **local** - what the capture triggers store: ``key_json`` is ``{"<key>": "<text or hex>"}``,
  payloads are ``json_object`` over all columns with BLOBs as lowercase hex;
* **wire** - the protocol: keys are strings, UUID BLOBs are canonical dashed UUIDs, other BLOBs
  standard padded base64;
* **SQL** - the values bound to address or write a row (BLOBs as ``bytes``).

The local encoding is defined once, as SQL expressions (:func:`key_json_sql`,
:func:`payload_json_sql`), used both by the triggers and by :func:`serialize_row`; so a live row
is serialised byte for byte like a captured one (no driver artefacts, §12.41). The Python
:func:`local_key_json` reproduces SQLite's ``json_object`` string escaping, which is what makes
``key_json`` identical whichever side produced it (§12.22, §12.37).

All statements use ``?`` placeholders and run through the driver, because quoted identifiers
may legally contain ``:`` which ``sqlalchemy.text`` would take for a bind parameter.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client.errors import KeyEncodingError, PayloadEncodingError
from oversync_sa.client.local_schema import fetch_all
from oversync_sa.client.validation import TableInfo
from oversync_sa.wire import SyncKey, is_canonical_uuid

__all__ = [
    "SqlValue",
    "WirePayload",
    "delete_row",
    "delete_sql",
    "key_json_decoder",
    "key_json_sql",
    "local_key_json",
    "local_payload_to_wire",
    "local_pk_from_key_json",
    "local_pk_from_wire_key",
    "local_pk_to_sql",
    "payload_json_sql",
    "quote_identifier",
    "serialize_row",
    "sql_literal",
    "text_affinity",
    "upsert_row",
    "upsert_sql",
    "wire_key",
    "wire_key_codec",
    "wire_payload_decoder",
    "wire_payload_struct_decoder",
    "wire_payload_to_values",
    "wire_text_key_prefix",
]

#: A value bound to SQLite.
SqlValue = str | bytes | int | float | None
#: A wire payload as received: already decoded, or raw JSON bytes/text (e.g. ``msgspec.Raw``).
WirePayload = Mapping[str, Any] | str | bytes | msgspec.Raw

_HEX: Final = re.compile(r"[0-9a-fA-F]*")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_decode_json: Final = msgspec.json.Decoder().decode


# --------------------------------------------------------------------------- SQL text helpers


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQLite identifier (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    """``value`` as a single-quoted SQLite string literal (embedded quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def text_affinity(declared_type: str) -> bool:
    """Whether SQLite gives a column of ``declared_type`` TEXT affinity (its type rules 1-2).

    Such a column stores every number as text, so its values are never ``real`` - not even
    ``NEW.<column>`` in an AFTER trigger, which sees the values after affinity was applied.
    """
    upper = declared_type.upper()
    return "INT" not in upper and any(word in upper for word in ("CHAR", "CLOB", "TEXT"))


def _column_value_sql(ref: str, column: str, is_blob: bool, text: bool = False) -> str:
    value = f"{ref}.{quote_identifier(column)}"
    if text and not is_blob:
        # Never real (see text_affinity): the REAL rendering below would be dead weight in
        # every captured write.
        return value
    if not is_blob:
        # json_object renders REAL with 15 significant digits, so a double that needs 16-17
        # would be pushed rounded while the writer keeps the exact value (a Go defect,
        # CLIENT.md §12.38). 17 digits round-trip every finite double; infinities (which
        # printf spells "Inf", not JSON) keep SQLite's own rendering.
        return (
            f"CASE WHEN typeof({value}) = 'real' AND abs({value}) < 1e309"
            f" THEN json(printf('%!.17g', {value})) ELSE {value} END"
        )
    return f"CASE WHEN {value} IS NULL THEN NULL ELSE lower(hex({value})) END"


def key_json_sql(info: TableInfo, ref: str) -> str:
    """SQL expression for the local ``key_json`` of the row ``ref`` (``NEW``, ``OLD``, a table).

    BLOB keys become lowercase hex, text keys stay as they are.
    """
    key = next((c for c in info.columns if c.json_name == info.key_json_name), None)
    text = key is not None and text_affinity(key.declared_type)
    value = _column_value_sql(ref, info.key_column, info.blob_key, text)
    return f"json_object({sql_literal(info.key_json_name)}, {value})"


def payload_json_sql(info: TableInfo, ref: str) -> str:
    """SQL expression for the local payload of the row ``ref``: every column, BLOBs as hex."""
    members = ", ".join(
        f"{sql_literal(c.json_name)},"
        f" {_column_value_sql(ref, c.name, c.is_blob, text_affinity(c.declared_type))}"
        for c in info.columns
    )
    return f"json_object({members})"


# --------------------------------------------------------------------------- keys


def _json_string(text: str) -> str:
    # Same escaping as SQLite's json_object: only '"', '\\' and C0 controls (\b \t \n \f \r
    # short, the rest \u00xx); everything else, including '<' and U+2028, stays raw.
    return json.dumps(text, ensure_ascii=False)


def _json_string_fast(text: str) -> str:
    # Hot path of pull/snapshot apply (one key per row): a printable string without '"' or
    # '\\' needs no escaping (isprintable() is False for every C0 control), so skip json.dumps.
    if text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'
    return _json_string(text)


def local_key_json(info: TableInfo, local_pk: str) -> str:
    """The local ``key_json`` for ``local_pk``, byte-identical to what the triggers store."""
    return "{" + _json_string_fast(info.key_json_name) + ":" + _json_string_fast(local_pk) + "}"


def local_pk_from_key_json(info: TableInfo, key_json: str) -> str:
    """The local PK (text value or hex) inside a stored ``key_json``."""
    try:
        decoded = _decode_json(key_json)
    except msgspec.DecodeError as exc:
        raise KeyEncodingError(info.name, info.key_column, key_json, "invalid key_json") from exc
    value = decoded.get(info.key_json_name) if isinstance(decoded, dict) else None
    if not isinstance(value, str) or len(decoded) != 1:
        raise KeyEncodingError(
            info.name,
            info.key_column,
            key_json,
            f"key_json must be an object with one string member {info.key_json_name!r}",
        )
    return value


def wire_key_codec(info: TableInfo) -> Callable[[Mapping[str, Any]], tuple[str, str]]:
    """``wire key -> (local_pk, key_json)`` for many rows of ``info`` (bulk apply loops).

    Same results and errors as :func:`local_pk_from_wire_key` + :func:`local_key_json`, with
    the member names and the ``key_json`` prefix worked out once per table instead of per row.
    """
    name = info.key_json_name
    prefix = "{" + _json_string_fast(name) + ":"
    blob = info.blob_key

    def codec(key: Mapping[str, Any]) -> tuple[str, str]:
        value = key.get(name)
        if value is None or blob or type(value) is not str:
            local_pk = local_pk_from_wire_key(info, key)
        else:
            local_pk = value
        return local_pk, prefix + _json_string_fast(local_pk) + "}"

    return codec


def wire_text_key_prefix(info: TableInfo) -> str | None:
    """``'{"<key member>":"'`` for inlining :func:`wire_key_codec` in a hot loop, else ``None``.

    For a text key (not BLOB) whose member name needs no escaping, a wire key value ``v`` that is
    a ``str`` needing no escaping either (printable, no ``"`` or ``\\``) has the local PK ``v``
    and the ``key_json`` ``prefix + v + '"}'``; every other value must go through the codec.
    """
    name = info.key_json_name
    if info.blob_key or _json_string_fast(name) != '"' + name + '"':
        return None
    return '{"' + name + '":"'


def key_json_decoder(info: TableInfo) -> Callable[[str], str]:
    """``key_json -> local_pk`` for many rows of ``info``; :func:`local_pk_from_key_json` results.

    The compact form the client itself writes (``{"<key>":"<value>"}`` with nothing to
    unescape) is sliced instead of parsed; anything else goes through the full decoder, which
    also raises its errors.
    """
    prefix = "{" + _json_string_fast(info.key_json_name) + ':"'
    start = len(prefix)

    def decode(key_json: str) -> str:
        if key_json.startswith(prefix) and key_json.endswith('"}'):
            value = key_json[start:-2]
            if value.isprintable() and '"' not in value and "\\" not in value:
                return value
        return local_pk_from_key_json(info, key_json)

    return decode


def _parse_uuid_any(text: str) -> bytes | None:
    """Bytes of a UUID in any of the forms Go's ``uuid.Parse`` accepts, else ``None``."""
    if len(text) == 45 and text[:9].lower() == "urn:uuid:":
        text = text[9:]
    elif len(text) == 38 and text[0] == "{" and text[-1] == "}":
        text = text[1:-1]
    if len(text) == 36:
        if any(text[i] != "-" for i in (8, 13, 18, 23)):
            return None
        text = text.replace("-", "")
        if len(text) != 32:
            return None
    if len(text) != 32 or not _HEX.fullmatch(text):
        return None
    return bytes.fromhex(text)


def _strict_base64(text: str) -> bytes | None:
    """Standard padded base64 that re-encodes to exactly ``text``, else ``None``."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _strict_hex(text: str) -> bytes | None:
    if len(text) % 2 or not _HEX.fullmatch(text):
        return None
    return bytes.fromhex(text)


def local_pk_to_sql(info: TableInfo, local_pk: str) -> str | bytes:
    """The value that addresses the row with ``local_pk`` in SQL.

    A BLOB PK is accepted as UUID text in any ``uuid.Parse`` form, else as round-trip-exact
    standard base64, else as even-length hex (§3.4); text PKs are bound unchanged.
    """
    if not info.blob_key:
        return local_pk
    for decode in (_parse_uuid_any, _strict_base64, _strict_hex):
        raw = decode(local_pk)
        if raw is not None:
            return raw
    raise KeyEncodingError(info.name, info.key_column, local_pk, f'invalid blob pk "{local_pk}"')


def wire_key(info: TableInfo, local_pk: str) -> SyncKey:
    """The wire ``SyncKey`` of a local PK; a BLOB PK must hold a 16-byte UUID."""
    if not info.blob_key:
        return {info.key_json_name: local_pk}
    try:
        raw = local_pk_to_sql(info, local_pk)
    except KeyEncodingError:
        raw = b""
    if not isinstance(raw, bytes) or len(raw) != 16:
        raise KeyEncodingError(
            info.name, info.key_column, local_pk, f'invalid blob UUID pk "{local_pk}"'
        )
    return {info.key_json_name: str(uuid.UUID(bytes=raw))}


def _canonical_wire_uuid(value: object) -> bytes | None:
    # Upper-case dashed input is tolerated; 32-hex, braces, urn: and whitespace are not.
    if not isinstance(value, str) or len(value) != 36 or not is_canonical_uuid(value.lower()):
        return None
    return uuid.UUID(value).bytes


def local_pk_from_wire_key(info: TableInfo, key: Mapping[str, Any]) -> str:
    """The local PK of a wire key received from the server (bundle, snapshot, conflict)."""
    value = key.get(info.key_json_name, key.get(info.key_column))
    if not isinstance(value, str):
        raise KeyEncodingError(
            info.name,
            info.key_column,
            value,
            f"wire key must have a string member {info.key_json_name!r}",
        )
    if not info.blob_key:
        return value
    raw = _canonical_wire_uuid(value)
    if raw is None:
        raise KeyEncodingError(
            info.name, info.key_column, value, f"wire key {value!r} is not a canonical UUID"
        )
    return raw.hex()


# --------------------------------------------------------------------------- payloads


def local_payload_to_wire(
    info: TableInfo, local_payload: str | bytes, *, key: str | None = None
) -> dict[str, Any]:
    """Convert a captured local payload (JSON text) to the wire payload object (§3.6).

    BLOB members holding a non-empty string are hex-decoded; the PK and UUID reference columns
    become canonical dashed UUIDs, other BLOBs padded standard base64. ``null``, ``""`` and
    non-BLOB members pass through. ``key`` (the local PK) only enriches error messages. The
    result still needs the wire package's canonical JSON before it is hashed or sent.
    """
    try:
        payload = _decode_json(local_payload)
    except msgspec.DecodeError as exc:
        raise PayloadEncodingError(info.name, "local payload is not valid JSON", key=key) from exc
    if not isinstance(payload, dict):
        raise PayloadEncodingError(info.name, "local payload must be a JSON object", key=key)
    for member, value in payload.items():
        if member not in info.blob_columns or not isinstance(value, str) or value == "":
            continue
        raw = _strict_hex(value)
        if raw is None:
            raise PayloadEncodingError(
                info.name, f"failed to decode hex for column {member}", column=member, key=key
            )
        if member in info.uuid_columns:
            if len(raw) != 16:
                what = "pk" if member == info.key_json_name else "reference"
                raise PayloadEncodingError(
                    info.name,
                    f"failed to decode blob UUID {what} for column {member}",
                    column=member,
                    key=key,
                )
            payload[member] = str(uuid.UUID(bytes=raw))
        else:
            payload[member] = base64.b64encode(raw).decode("ascii")
    return payload


def _decode_wire_payload(
    info: TableInfo, payload: WirePayload, key: str | None
) -> Mapping[str, Any]:
    if isinstance(payload, Mapping):
        return payload
    try:
        decoded = _decode_json(bytes(payload) if isinstance(payload, msgspec.Raw) else payload)
    except msgspec.DecodeError as exc:
        raise PayloadEncodingError(info.name, "wire payload is not valid JSON", key=key) from exc
    if not isinstance(decoded, dict):
        raise PayloadEncodingError(info.name, "wire payload must be a JSON object", key=key)
    return decoded


def _scalar_to_sql(info: TableInfo, column: str, value: Any, key: str | None) -> SqlValue:
    # bool before int: JSON true is an int subclass in Python but binds as 1/0 like Go.
    if value is None or isinstance(value, str | float):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        # SQLite integers are 64-bit; Go binds every number as float64, so do the same here.
        return value if _INT64_MIN <= value <= _INT64_MAX else float(value)
    raise PayloadEncodingError(
        info.name,
        f"payload field {column} must be a JSON scalar, got {type(value).__name__}",
        column=column,
        key=key,
    )


def _blob_to_sql(info: TableInfo, column: str, value: Any, key: str | None) -> bytes | None:
    if value is None:
        return None
    if column in info.uuid_columns:
        raw = _canonical_wire_uuid(value)
        if raw is None:
            raise PayloadEncodingError(
                info.name,
                f"failed to decode canonical wire UUID payload field {column}",
                column=column,
                key=key,
            )
        return raw
    decoded = _strict_base64(value) if isinstance(value, str) else None
    if decoded is None:
        raise PayloadEncodingError(
            info.name,
            f"failed to decode canonical wire blob payload field {column}",
            column=column,
            key=key,
        )
    return decoded


class _PayloadPlan:
    """A per-table decoder that turns wire payload JSON straight into SQL values.

    msgspec decodes the JSON into a generated struct whose fields are exactly the table's
    columns (lower-cased names, all required, unknown members forbidden) and whose types admit
    only what binds unchanged: ``str``, ``float``, ``null`` and ``int`` within SQLite's 64-bit
    range (BLOB columns: ``str`` or ``null``). Member set and scalar types are thus checked in C,
    with no per-row Python dict and no per-value type dispatch; only BLOB columns still go
    through :func:`_blob_to_sql`. Anything the struct rejects - booleans, out-of-range integers,
    nested values, missing or extra members, invalid JSON - is handed to the general
    :func:`_slow_payload_values`, which converts it or raises the exact error, so the two paths
    agree on every input.
    """

    __slots__ = ("blobs", "decode", "info")

    def __init__(self, info: TableInfo) -> None:
        scalar = Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)] | float | str | None
        fields = [
            (f"c{i}", str | None if column.is_blob else scalar)
            for i, column in enumerate(info.columns)
        ]
        struct = msgspec.defstruct(
            "WirePayload",
            fields,
            rename={f"c{i}": column.json_name for i, column in enumerate(info.columns)},
            forbid_unknown_fields=True,
        )
        self.info = info
        self.decode = msgspec.json.Decoder(struct).decode
        self.blobs = tuple(
            (i, column.json_name) for i, column in enumerate(info.columns) if column.is_blob
        )

    def values(self, payload: WirePayload, key: str | None) -> tuple[SqlValue, ...]:
        # Exact type first: pulled payloads are always Raw, and the ABC check of Mapping costs
        # about as much as decoding a small payload.
        if type(payload) is not msgspec.Raw and isinstance(payload, Mapping):
            return _slow_payload_values(self.info, payload, key)
        try:
            decoded = self.decode(payload)
        except msgspec.DecodeError:
            return _slow_payload_values(self.info, payload, key)
        values: tuple[SqlValue, ...] = msgspec.structs.astuple(decoded)
        if self.blobs:
            converted = list(values)
            for index, name in self.blobs:
                converted[index] = _blob_to_sql(self.info, name, converted[index], key)
            values = tuple(converted)
        return values


#: ``id(TableInfo)`` -> its plan; the plan keeps the ``TableInfo`` alive, so ids are not reused.
_PLANS: dict[int, tuple[TableInfo, _PayloadPlan]] = {}


def _payload_plan(info: TableInfo) -> _PayloadPlan:
    # Keyed by identity: hashing a frozen TableInfo (all its columns) per row would cost more
    # than the lookup saves. TableInfo objects are made once per client, so this stays small.
    entry = _PLANS.get(id(info))
    if entry is None or entry[0] is not info:
        entry = (info, _PayloadPlan(info))
        _PLANS[id(info)] = entry
    return entry[1]


def wire_payload_decoder(
    info: TableInfo,
) -> Callable[[WirePayload, str | None], tuple[SqlValue, ...]]:
    """``(payload, key) -> values``: :func:`wire_payload_to_values` for many rows of ``info``.

    Looks the table's decoder up once instead of once per row (bulk apply loops).
    """
    return _payload_plan(info).values


def wire_payload_struct_decoder(info: TableInfo) -> Callable[[msgspec.Raw], Any] | None:
    """For inlining :func:`wire_payload_decoder` on ``msgspec.Raw`` payloads in a hot loop.

    ``msgspec.structs.astuple(decode(raw))`` are then the SQL values; a ``msgspec.DecodeError``
    means the payload must go through the decoder instead (which converts it or raises the
    exact error). ``None`` for a table with BLOB columns, whose values need converting.
    """
    plan = _payload_plan(info)
    return None if plan.blobs else plan.decode


def wire_payload_to_values(
    info: TableInfo, payload: WirePayload, *, key: str | None = None
) -> tuple[SqlValue, ...]:
    """SQL values, in column order, for writing a wire payload with :func:`upsert_sql`.

    The payload must carry exactly the table's columns under their lower-cased names. BLOBs are
    decoded strictly (canonical UUID for the PK and UUID references, round-trip base64 otherwise);
    JSON integers bind as ``int``, other numbers as ``float``, booleans as 1/0.
    """
    return _payload_plan(info).values(payload, key)


def _slow_payload_values(
    info: TableInfo, payload: WirePayload, key: str | None
) -> tuple[SqlValue, ...]:
    """The general conversion (any input, every error message) behind :class:`_PayloadPlan`."""
    members = _decode_wire_payload(info, payload, key)
    if len(members) != len(info.columns):
        raise PayloadEncodingError(
            info.name,
            f"payload for {info.name} must contain every table column"
            f" ({len(info.columns)} expected, {len(members)} given)",
            key=key,
        )
    values: list[SqlValue] = []
    for column in info.columns:
        name = column.json_name
        if name not in members:
            raise PayloadEncodingError(
                info.name, f"payload for {info.name} is missing column {name}", column=name, key=key
            )
        value = members[name]
        if column.is_blob:
            values.append(_blob_to_sql(info, name, value, key))
        else:
            values.append(_scalar_to_sql(info, name, value, key))
    return tuple(values)


# --------------------------------------------------------------------------- statements


def upsert_sql(info: TableInfo, rows: int = 1) -> str:
    """``INSERT ... ON CONFLICT(key) DO UPDATE`` over all columns, in column order.

    Never ``INSERT OR REPLACE``: a replace deletes the old row first, which would cascade to
    children with ``ON DELETE CASCADE``. ``rows`` > 1 writes that many rows per statement
    (``VALUES (...), (...)``, parameters row after row).
    """
    table = quote_identifier(info.name)
    columns = ", ".join(quote_identifier(c.name) for c in info.columns)
    values = ", ".join(["(" + ", ".join("?" for _ in info.columns) + ")"] * rows)
    key = quote_identifier(info.key_column)
    updates = ", ".join(
        f"{quote_identifier(c.name)} = excluded.{quote_identifier(c.name)}"
        for c in info.columns
        if c.name != info.key_column
    )
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT ({key}) {action}"


def delete_sql(info: TableInfo, rows: int = 1) -> str:
    """``DELETE`` of rows by their sync keys (one ``?`` per row, see :func:`local_pk_to_sql`)."""
    target = f"DELETE FROM {quote_identifier(info.name)} WHERE {quote_identifier(info.key_column)}"
    if rows == 1:
        return f"{target} = ?"
    return f"{target} IN ({', '.join('?' * rows)})"


async def upsert_row(
    conn: AsyncConnection, info: TableInfo, payload: WirePayload, *, key: str | None = None
) -> None:
    """Write one wire payload into its table (in the caller's transaction)."""
    await conn.exec_driver_sql(upsert_sql(info), wire_payload_to_values(info, payload, key=key))


async def delete_row(conn: AsyncConnection, info: TableInfo, local_pk: str) -> None:
    """Delete the row with ``local_pk`` (in the caller's transaction); absent rows are fine."""
    await conn.exec_driver_sql(delete_sql(info), (local_pk_to_sql(info, local_pk),))


async def serialize_row(conn: AsyncConnection, info: TableInfo, local_pk: str) -> str | None:
    """The local payload of the live row ``local_pk``, exactly as a capture trigger writes it.

    Evaluates :func:`payload_json_sql` in SQLite, so REAL rendering, BLOB hex and TEXT-in-BLOB
    handling match the triggers; ``None`` when the row does not exist.
    """
    table = quote_identifier(info.name)
    rows = await fetch_all(
        conn,
        f"SELECT {payload_json_sql(info, table)} FROM {table}"
        f" WHERE {quote_identifier(info.key_column)} = ?",
        (local_pk_to_sql(info, local_pk),),
    )
    return None if not rows else str(rows[0][0])
