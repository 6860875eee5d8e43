"""Malformed push rows over HTTP: the contract's answer, and a database left exactly as it was.

Where each case is refused follows SERVER.md §5.2/§5.3:

* **at chunk upload** (``400 push_chunk_invalid``, before any database work, so nothing is
  staged): every structural check of §5.2 (schema/table names and registration, op, key shape
  and canonical UUID text, duplicates, payload presence and shape, hidden scope column, key
  match, column-name syntax, bytea base64) and the row limits. This server also refuses here
  what the commit could never apply: a column the server table does not have, one column named
  twice in different case, and NUL characters (Go stages these and answers 500 at commit; see
  docs/interop.md);
  Values whose type PostgreSQL's input functions refuse are refused here too, by the same
  conversion the commit uses (:mod:`oversync_sa.server.payload_types`), with the table, key and
  PostgreSQL's reason in the message; Go stages them and answers an anonymous 500 at commit
  (§5.3 step 10: "type errors are SQL errors → 500").

"Unchanged" is checked on a dump of every table of the business and ``sync`` schemas.
"""

from __future__ import annotations

from typing import Any, Final

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.server import SyncService, push_sessions
from tests.http.http_support import app_client, headers, make_app, make_service, uid
from tests.security._support import (
    assert_error,
    commit,
    connect,
    create_session,
    dump,
    push,
    row,
    scalar,
    upload,
)

pytestmark = pytest.mark.postgres

#: Has hex letters, so its uppercase form differs.
K: Final = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
K2: Final = uid(2)
USER: Final = {"name": "Ada", "email": "ada@example.com"}


def _user(**extra: Any) -> dict[str, Any]:
    return {**USER, **extra}


def _raw(**members: Any) -> dict[str, Any]:
    """A users row with exactly ``members`` (to send ``"payload": null`` and the like)."""
    base: dict[str, Any] = {
        "schema": "business", "table": "users", "key": {"id": K}, "op": "INSERT",
        "base_row_version": 0,
    }
    return {**base, **members}


#: (case id, rows of one chunk, message fragment); each is 400 push_chunk_invalid.
CHUNK_REJECTED: Final[list[tuple[str, list[dict[str, Any]], str]]] = [
    ("payload-key-differs", [row("users", K, _user(id=K2))],
     "payload key business.users.id must match request key"),
    ("payload-key-not-a-string", [row("users", K, _user(id=1))],
     "payload key business.users.id must match request key"),
    ("delete-with-payload", [row("users", K, {"id": K}, op="DELETE")],
     "DELETE for business.users must not include payload"),
    ("delete-with-null-payload", [_raw(op="DELETE", payload=None)],
     "DELETE for business.users must not include payload"),
    ("insert-without-payload", [row("users", K)], "INSERT for business.users requires payload"),
    ("update-without-payload", [row("users", K, op="UPDATE", base=1)],
     "UPDATE for business.users requires payload"),
    ("insert-null-payload", [_raw(payload=None)], "payload for business.users must be a JSON"),
    ("payload-array", [_raw(payload=[USER])], "payload for business.users must be a JSON object"),
    ("payload-string", [_raw(payload="x")], "payload for business.users must be a JSON object"),
    ("unknown-op", [row("users", K, _user(), op="UPSERT")], 'invalid op "UPSERT"'),
    ("empty-op", [row("users", K, _user(), op="")], 'invalid op ""'),
    ("unknown-table", [row("nope", K, _user())], "table business.nope is not registered"),
    ("unknown-schema", [row("users", K, _user(), schema="other")],
     "table other.users is not registered"),
    ("sync-schema-table", [row("bundle_log", K, _user(), schema="sync")],
     "table sync.bundle_log is not registered"),
    ("unknown-column", [row("users", K, _user(nope=1))],
     'payload for business.users contains unknown column "nope"'),
    ("column-named-twice", [row("users", K, _user(NAME="Eve"))],
     'payload for business.users names column "name" twice'),
    ("hidden-scope-column", [row("users", K, _user(_sync_scope_id="bob"))],
     "must not include hidden scope column"),
    ("hidden-scope-column-upper", [row("users", K, _user(_SYNC_SCOPE_ID="bob"))],
     'must not include hidden scope column "_SYNC_SCOPE_ID"'),
    ("key-missing", [_raw(key={}, payload=USER)], 'row key for business.users must include "id"'),
    ("key-wrong-column", [_raw(key={"uuid": K}, payload=USER)],
     'row key for business.users must include "id"'),
    ("key-not-a-string", [_raw(key={"id": 1}, payload=USER)],
     "row key business.users.id must be a string"),
    ("uuid-uppercase", [row("users", K.upper(), _user())],
     "row key business.users.id must use canonical dashed lowercase UUID text"),
    ("uuid-braces", [row("users", "{" + K + "}", _user())], "canonical dashed lowercase UUID"),
    ("uuid-no-dashes", [row("users", K.replace("-", ""), _user())],
     "canonical dashed lowercase UUID"),
    ("uuid-urn", [row("users", "urn:uuid:" + K, _user())], "canonical dashed lowercase UUID"),
    ("uuid-garbage", [row("users", "not-a-uuid", _user())], "canonical dashed lowercase UUID"),
    ("duplicate-target", [row("users", K, _user()), row("users", K, op="DELETE")],
     f"duplicate target row in push request: business.users {K}"),
    ("bytea-not-base64", [row("files", K, {"name": "f", "data": "not base64!"})],
     "payload binary field business.files.data must be valid base64"),
    ("bytea-url-safe", [row("files", K, {"name": "f", "data": "-_8="})],
     "business.files.data must be valid base64"),
    ("bytea-unpadded", [row("files", K, {"name": "f", "data": "QQ"})],
     "business.files.data must be valid base64"),
    ("bytea-number", [row("files", K, {"name": "f", "data": 12})],
     "payload binary field business.files.data must be a base64 string"),
    ("bytea-object", [row("files", K, {"name": "f", "data": {"b": "QQ=="}})],
     "business.files.data must be a base64 string"),
    ("nul-in-text", [row("users", K, _user(name="a\u0000b"))],
     "payload value business.users.name contains a NUL character"),
]


async def _new_session(client: httpx.AsyncClient, planned: int) -> str:
    """A connected user with an empty staging session of ``planned`` rows."""
    await connect(client)
    return await create_session(client, planned)


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [pytest.param(rows, fragment, id=case) for case, rows, fragment in CHUNK_REJECTED],
)
async def test_rejected_at_chunk_upload_and_nothing_staged(
    client: httpx.AsyncClient, service: SyncService, rows: list[dict[str, Any]], fragment: str
) -> None:
    push_id = await _new_session(client, len(rows))
    before = await dump(service.engine)
    assert_error(await upload(client, push_id, rows), 400, "push_chunk_invalid", fragment)
    assert await dump(service.engine) == before
    assert before["sync.push_session_rows"] == []
    # The refusal did not burn the session: a valid chunk is still expected at ordinal 0.
    valid = [row("users", uid(100 + n), _user(email=f"{n}@x")) for n in range(len(rows))]
    resp = await upload(client, push_id, valid)
    assert resp.status_code == 200, resp.text
    assert resp.json()["next_expected_row_ordinal"] == len(rows)


@pytest.mark.parametrize(
    ("chunk", "fragment"),
    [
        ({"start_row_ordinal": 0, "rows": []}, "rows must not be empty"),
        ({"start_row_ordinal": -1, "rows": [row("users", K, USER)]},
         "start_row_ordinal must be >= 0"),
        # Beyond planned_row_count (the session plans one row): found after the lookup.
        ({"start_row_ordinal": 0, "rows": [row("users", K, USER), row("users", K2, USER)]},
         "chunk exceeds planned_row_count"),
    ],
    ids=["empty-rows", "negative-start", "beyond-planned-row-count"],
)
async def test_rejected_chunk_shapes(
    client: httpx.AsyncClient, service: SyncService, chunk: dict[str, Any], fragment: str
) -> None:
    push_id = await _new_session(client, 1)
    before = await dump(service.engine)
    resp = await client.post(f"/sync/push-sessions/{push_id}/chunks", json=chunk,
                             headers=headers())
    assert_error(resp, 400, "push_chunk_invalid", fragment)
    assert await dump(service.engine) == before


async def test_chunk_over_max_rows_per_push_chunk(pg_engine: AsyncEngine) -> None:
    service = await make_service(pg_engine, max_rows_per_push_chunk=2)
    async with app_client(make_app(service)) as client:
        push_id = await _new_session(client, 3)
        before = await dump(service.engine)
        rows = [row("users", uid(n), _user(email=f"{n}@x")) for n in range(1, 4)]
        assert_error(await upload(client, push_id, rows), 400, "push_chunk_invalid",
                     "rows length 3 exceeds max_rows_per_push_chunk 2")
        assert await dump(service.engine) == before
        # The same rows in chunks within the limit are fine.
        assert (await upload(client, push_id, rows[:2])).status_code == 200
        assert (await upload(client, push_id, rows[2:], start=2)).status_code == 200


async def test_body_over_the_size_limit_is_the_decode_error(service: SyncService) -> None:
    async with app_client(make_app(service, request_max_body_size=4096)) as client:
        push_id = await _new_session(client, 1)
        before = await dump(service.engine)
        big = row("users", K, _user(name="x" * 8192))
        assert_error(await upload(client, push_id, [big]), 400, "invalid_request",
                     "Failed to parse push chunk request")
        assert await dump(service.engine) == before


async def test_bundle_limits_are_advertised_not_enforced(pg_engine: AsyncEngine) -> None:
    """SERVER.md §6.4: ``max_rows_per_bundle``/``max_bytes_per_bundle`` are advertised only;
    clients size their bundles by them, the server never refuses a bundle for its size."""
    service = await make_service(pg_engine, max_rows_per_bundle=2, max_bytes_per_bundle=64)
    async with app_client(make_app(service)) as client:
        limits = (await client.get("/sync/capabilities", headers=headers())).json()
        assert limits["bundle_limits"]["max_rows_per_bundle"] == 2
        assert limits["bundle_limits"]["max_bytes_per_bundle"] == 64
        await connect(client)
        rows = [row("users", uid(n), _user(email=f"{n}@x")) for n in range(1, 4)]
        assert (await push(client, rows))["row_count"] == 3


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"start_row_ordinal": 0, "rows": [{"schema": 1}]}', "invalid_request"),
        (b'{"start_row_ordinal": "0", "rows": []}', "invalid_request"),
        (b'{"start_row_ordinal": 0, "rows": [{"base_row_version": 1.5}]}', "invalid_request"),
        (b'{"start_row_ordinal": 0, "rows": [{"key": "id"}]}', "invalid_request"),
        (b'{"start_row_ordinal": 0, "rows": [', "invalid_request"),
        (b"\xff\xfe", "invalid_request"),
    ],
    ids=["schema-number", "ordinal-string", "base-fraction", "key-string", "truncated",
         "not-utf8-not-json"],
)
async def test_undecodable_chunk_bodies(
    client: httpx.AsyncClient, service: SyncService, body: bytes, code: str
) -> None:
    push_id = await _new_session(client, 1)
    before = await dump(service.engine)
    resp = await client.post(
        f"/sync/push-sessions/{push_id}/chunks", content=body,
        headers={**headers(), "Content-Type": "application/json"},
    )
    assert_error(resp, 400, code, "Failed to parse push chunk request")
    assert await dump(service.engine) == before


async def test_invalid_utf8_inside_a_string_becomes_replacement_characters(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    """Go's decoder replaces each invalid UTF-8 byte with U+FFFD instead of refusing the body
    (SERVER.md §11.26), and so does this server: the raw bytes never reach the database."""
    push_id = await _new_session(client, 1)
    body = (
        b'{"start_row_ordinal":0,"rows":[{"schema":"business","table":"users","key":{"id":"'
        + K.encode() + b'"},"op":"INSERT","base_row_version":0,'
        b'"payload":{"name":"A\xff\xc3B","email":"e@x"}}]}'
    )
    resp = await client.post(
        f"/sync/push-sessions/{push_id}/chunks", content=body,
        headers={**headers(), "Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    assert (await commit(client, push_id)).status_code == 200
    stored = await scalar(service.engine, "SELECT name FROM business.users WHERE id = :k", k=K)
    assert stored == "A\ufffd\ufffdB"


async def test_negative_base_row_version_is_a_conflict_at_commit(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    """§5.2 does not range-check ``base_row_version``; §5.3's conflict table does: an INSERT
    of a missing row must name version 0, so ``-1`` is a ``push_conflict``, nothing applied."""
    push_id = await _new_session(client, 1)
    assert (await upload(client, push_id, [row("users", K, USER, base=-1)])).status_code == 200
    before = await dump(service.engine)
    resp = await commit(client, push_id)
    assert_error(resp, 409, "push_conflict", "expected missing row at version 0, got -1")
    assert resp.json()["conflict"]["base_row_version"] == -1
    assert await dump(service.engine) == before


# ------------------------------------------------------------------ values, by column type

#: (case id, sec.kinds payload members): PostgreSQL's input functions refuse these.
TYPE_CASES: Final[list[tuple[str, dict[str, Any]]]] = [
    ("string-into-integer", {"i": "abc"}),
    ("fraction-into-integer", {"i": 1.5}),
    ("object-into-integer", {"i": {"v": 1}}),
    ("out-of-range-bigint", {"big": 1e20}),
    ("boolean-into-numeric", {"n": True}),
    ("string-into-numeric", {"n": "twelve"}),
    ("number-into-uuid", {"u": 5}),
    ("bad-uuid-text", {"u": "not-a-uuid"}),
    ("bad-timestamp", {"ts": "2024-13-45T99:00:00Z"}),
    ("number-into-timestamp", {"ts": 1700000000}),
    ("bad-date", {"d": "2024-02-30"}),
    ("object-into-date", {"d": {"y": 2024}}),
    ("string-into-boolean", {"flag": "maybe"}),
    ("number-into-boolean", {"flag": 2}),
]


@pytest.mark.parametrize(
    "members", [pytest.param(m, id=case) for case, m in TYPE_CASES]
)
async def test_wrong_json_type_is_rejected_at_chunk_upload(
    kinds_client: httpx.AsyncClient, kinds_service: SyncService, members: dict[str, Any]
) -> None:
    push_id = await _new_session(kinds_client, 1)
    before = await dump(kinds_service.engine, ("sec", "sync"))
    resp = await upload(kinds_client, push_id, [row("kinds", K, members, schema="sec")])
    assert_error(
        resp, 400, "push_chunk_invalid",
        f"payload for sec.kinds key '{K}' has a value PostgreSQL cannot convert",
    )
    assert await dump(kinds_service.engine, ("sec", "sync")) == before
    assert before["sync.push_session_rows"] == []


async def test_wrong_type_in_a_later_row_names_that_row_and_stages_nothing(
    kinds_client: httpx.AsyncClient, kinds_service: SyncService
) -> None:
    """A chunk is checked per table in one statement; the failing row is then named."""
    good, bad = "b1a7e5f2-0000-4000-8000-000000000001", "b1a7e5f2-0000-4000-8000-000000000002"
    push_id = await _new_session(kinds_client, 2)
    before = await dump(kinds_service.engine, ("sec", "sync"))
    resp = await upload(kinds_client, push_id, [
        row("kinds", good, {"i": 7}, schema="sec"),
        row("kinds", bad, {"i": "seven"}, schema="sec"),
    ])
    assert_error(resp, 400, "push_chunk_invalid", f"sec.kinds key '{bad}'")
    assert 'invalid input syntax for type integer: "seven"' in resp.json()["message"]
    assert await dump(kinds_service.engine, ("sec", "sync")) == before
    # The session is intact: the same ordinal range can be uploaded again, corrected.
    fixed = await upload(kinds_client, push_id, [
        row("kinds", good, {"i": 7}, schema="sec"),
        row("kinds", bad, {"i": 8}, schema="sec"),
    ])
    assert fixed.status_code == 200, fixed.text
    assert (await commit(kinds_client, push_id)).status_code == 200


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        ({"bin": "%%%"}, "payload binary field sec.kinds.bin must be valid base64"),
        ({"bin": True}, "payload binary field sec.kinds.bin must be a base64 string"),
        ({"t": "\u0000"}, "payload value sec.kinds.t contains a NUL character"),
        ({"j": {"nested": ["ok", "x\u0000"]}}, "payload value sec.kinds.j contains a NUL"),
        ({"j": {"x\u0000": 1}}, "payload value sec.kinds.j contains a NUL"),
    ],
    ids=["bytea-bad-base64", "bytea-boolean", "nul-text", "nul-nested-jsonb", "nul-jsonb-name"],
)
async def test_typed_values_rejected_at_chunk_upload(
    kinds_client: httpx.AsyncClient, kinds_service: SyncService, members: dict[str, Any],
    fragment: str,
) -> None:
    push_id = await _new_session(kinds_client, 1)
    before = await dump(kinds_service.engine, ("sec", "sync"))
    resp = await upload(kinds_client, push_id, [row("kinds", K, members, schema="sec")])
    assert_error(resp, 400, "push_chunk_invalid", fragment)
    assert await dump(kinds_service.engine, ("sec", "sync")) == before


async def test_text_key_with_nul_is_rejected_at_chunk_upload(
    kinds_client: httpx.AsyncClient, kinds_service: SyncService
) -> None:
    push_id = await _new_session(kinds_client, 1)
    before = await dump(kinds_service.engine, ("sec", "sync"))
    note = row("notes", "a\u0000b", {"body": "x"}, schema="sec", key_column="code")
    assert_error(await upload(kinds_client, push_id, [note]), 400, "push_chunk_invalid",
                 "payload value sec.notes.code contains a NUL character")
    assert await dump(kinds_service.engine, ("sec", "sync")) == before


async def test_postgresql_input_rules_decide_what_converts(
    kinds_client: httpx.AsyncClient, kinds_service: SyncService
) -> None:
    """§5.3: conversion is PostgreSQL's own. Strings go through the column's input function
    and nested JSON into text is its JSON text; an escaped ``\\\\u0000`` (a backslash, not a
    NUL) is ordinary text."""
    await connect(kinds_client)
    members = {
        "i": "12", "n": 1.25, "d": "2024-02-29", "ts": "2024-02-29T10:00:00Z", "flag": "yes",
        "u": K2, "t": {"a": 1}, "j": {"a": "\\u0000"}, "bin": "AAH/",
    }
    await push(kinds_client, [row("kinds", K, members, schema="sec")])
    stored = await scalar(
        kinds_service.engine,
        "SELECT json_build_array(i, n, d::text, ts = '2024-02-29T10:00:00Z', flag, u::text, t,"
        " j ->> 'a', encode(bin, 'hex'))::text FROM sec.kinds",
    )
    assert stored == (
        f'[12, 1.25, "2024-02-29", true, true, "{K2}", "{{\\"a\\": 1}}", "\\\\u0000", "0001ff"]'
    )


async def test_member_names_reach_their_columns_whatever_their_case(
    client: httpx.AsyncClient, service: SyncService
) -> None:
    """SERVER.md §11.20 (a Go defect not copied): Go lower-cases member names for the column
    list but not the JSON keys, so ``"Name"`` silently wrote NULL into ``name``."""
    await connect(client)
    await push(client, [row("users", K, {"Name": "Ada", "EMAIL": "ada@x"})])
    await push(client, [row("users", K, {"NAME": "Grace"}, op="UPDATE", base=1)], sbid=2)
    stored = await scalar(
        service.engine, "SELECT json_build_array(name, email)::text FROM business.users"
    )
    assert stored == '["Grace", "ada@x"]'


@pytest.mark.parametrize(
    ("depth", "code", "fragment"),
    [
        (600, "push_chunk_invalid", "payload for business.users is nested too deeply"),
        (100_000, "invalid_request", "Failed to parse push chunk request"),
    ],
)
async def test_deeply_nested_payloads_are_400_not_500(
    client: httpx.AsyncClient, service: SyncService, depth: int, code: str, fragment: str
) -> None:
    """Found by this suite: nesting beyond the Python stack was a ``RecursionError`` and so a
    ``500 push_chunk_failed``. It is a bad request like any other."""
    push_id = await _new_session(client, 1)
    before = await dump(service.engine)
    nested = "[" * depth + "]" * depth
    body = (
        '{"start_row_ordinal":0,"rows":[{"schema":"business","table":"users","key":{"id":"'
        + K + '"},"op":"INSERT","base_row_version":0,"payload":{"name":"a","email":"e",'
        '"created_at":' + nested + "}}]}"
    )
    resp = await client.post(
        f"/sync/push-sessions/{push_id}/chunks", content=body.encode(),
        headers={**headers(), "Content-Type": "application/json"},
    )
    assert_error(resp, 400, code, fragment)
    assert await dump(service.engine) == before


async def test_deeply_nested_connect_body_is_400_not_500(client: httpx.AsyncClient) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    resp = await client.post(
        "/sync/connect", content=f'{{"x":{nested}}}'.encode(), headers=headers()
    )
    assert_error(resp, 400, "invalid_request", "Failed to parse connect request")


async def test_wrong_type_in_the_second_table_of_a_chunk_names_that_table(
    kinds_client: httpx.AsyncClient, kinds_service: SyncService
) -> None:
    """Each table of a chunk is checked as one batch; a passing first table is skipped."""
    push_id = await _new_session(kinds_client, 2)
    before = await dump(kinds_service.engine, ("sec", "sync"))
    resp = await upload(kinds_client, push_id, [
        row("notes", "n-1", {"code": "n-1", "body": "fine"}, schema="sec", key_column="code"),
        row("kinds", K, {"d": "2024-02-30"}, schema="sec"),
    ])
    assert_error(resp, 400, "push_chunk_invalid", f"payload for sec.kinds key '{K}'")
    assert await dump(kinds_service.engine, ("sec", "sync")) == before


async def test_batch_failure_that_no_single_row_reproduces_is_push_chunk_failed(
    kinds_client: httpx.AsyncClient,
    kinds_service: SyncService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A data exception the payloads cannot explain stays an anonymous 500 (and is logged)."""
    real = push_sessions._stage_sql

    def failing_stage_sql(tables: Any) -> Any:
        del tables
        return sa.text("SELECT 1 / 0")  # SQLSTATE 22012: a data exception, but no payload's

    monkeypatch.setattr(push_sessions, "_stage_sql", failing_stage_sql)
    push_id = await _new_session(kinds_client, 1)
    before = await dump(kinds_service.engine, ("sec", "sync"))
    with caplog.at_level("ERROR", logger="oversync_sa.server.upload_support"):
        resp = await upload(kinds_client, push_id, [row("kinds", K, {"i": 1}, schema="sec")])
    assert_error(resp, 500, "push_chunk_failed", "upload push chunk failed")
    assert "division by zero" not in resp.text
    assert any("division by zero" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    assert await dump(kinds_service.engine, ("sec", "sync")) == before
    monkeypatch.setattr(push_sessions, "_stage_sql", real)
    assert (await upload(kinds_client, push_id, [
        row("kinds", K, {"i": 1}, schema="sec"),
    ])).status_code == 200
