"""SQL injection through every name and value a client controls.

Identifiers (schema, table, key column, payload columns) only ever reach SQL after they matched
``^[a-z0-9_]+$`` *and* a registered table or one of its columns, so hostile names are refused at
chunk upload (``400 push_chunk_invalid``) with nothing written. Values (keys, payload values,
path and query values, the source header, the token's subject) are bound parameters: they are
stored verbatim or refused by their own parser, and never executed.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import quote

import httpx
import pytest

from oversync_sa.litestar import issue_token
from oversync_sa.server import SyncService
from tests.http.http_support import SECRET, headers, uid
from tests.security._support import (
    assert_error,
    connect,
    create_session,
    dump,
    push,
    row,
    scalar,
    upload,
)

pytestmark = pytest.mark.postgres

K: Final = uid(1)
USER: Final = {"name": "Ada", "email": "ada@example.com"}
DROP: Final = "; DROP TABLE business.users; --"


def _raw(**members: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": "business", "table": "users", "key": {"id": K}, "op": "INSERT",
        "base_row_version": 0, "payload": USER,
    }
    return {**base, **members}


INJECTIONS: Final[list[tuple[str, dict[str, Any], str]]] = [
    ("table-statement", _raw(table="users" + DROP), "invalid table name"),
    ("table-quote", _raw(table='users" CASCADE; --'), "invalid table name"),
    ("table-qualified", _raw(table="business.users"), "invalid table name"),
    ("schema-statement", _raw(schema="business; DROP SCHEMA sync CASCADE; --"),
     "invalid schema name"),
    ("schema-quote", _raw(schema='business"."users'), "invalid schema name"),
    ("schema-of-catalog", _raw(schema="pg_catalog", table="pg_authid"),
     "table pg_catalog.pg_authid is not registered"),
    ("key-column-name", _raw(key={'id" OR 1=1 --': K}), 'row key for business.users must include'),
    ("key-value-uuid", _raw(key={"id": K + "' OR '1'='1"}), "canonical dashed lowercase UUID"),
    ("payload-column-quote", _raw(payload={**USER, "name\" = 'x'; --": 1}),
     "contains invalid column"),
    ("payload-column-statement", _raw(payload={**USER, "email" + DROP: 1}),
     "contains invalid column"),
    ("payload-column-function", _raw(payload={**USER, "pg_sleep": 1}),
     'contains unknown column "pg_sleep"'),
    ("payload-column-scope", _raw(payload={**USER, "_Sync_Scope_Id": "bob"}),
     "must not include hidden scope column"),
    ("op-statement", _raw(op="INSERT" + DROP), "invalid op"),
]


@pytest.mark.parametrize(
    ("bad_row", "fragment"),
    [pytest.param(r, f, id=case) for case, r, f in INJECTIONS],
)
async def test_hostile_names_are_refused_at_chunk_upload(
    client: httpx.AsyncClient, service: SyncService, bad_row: dict[str, Any], fragment: str
) -> None:
    await connect(client)
    await push(client, [row("users", uid(50), USER)])
    push_id = await create_session(client, 1, sbid=2)
    before = await dump(service.engine)
    assert_error(await upload(client, push_id, [bad_row]), 400, "push_chunk_invalid", fragment)
    assert await dump(service.engine) == before
    assert await scalar(service.engine, "SELECT count(*) FROM business.users") == 1


async def test_hostile_values_are_stored_verbatim(
    kinds_client: httpx.AsyncClient, kinds_service: SyncService
) -> None:
    """A text key, a payload value, the source header and the token subject, each carrying SQL,
    end up as data in the right place."""
    user = "mallory'); DROP TABLE sec.notes; --"
    source = "dev'; DELETE FROM sync.bundle_log; --"
    code = "x'); DROP TABLE sec.kinds; --"
    body = "'; TRUNCATE sec.notes; --"
    auth = {
        "Authorization": f"Bearer {issue_token(user, SECRET)}", "Oversync-Source-ID": source,
    }
    connected = await kinds_client.post("/sync/connect", json={"has_local_pending_rows": False},
                                        headers=auth)
    assert connected.status_code == 200, connected.text
    create = await kinds_client.post(
        "/sync/push-sessions", json={"source_bundle_id": 1, "planned_row_count": 2}, headers=auth
    )
    push_id = create.json()["push_id"]
    rows = [
        row("notes", code, {"body": body}, schema="sec", key_column="code"),
        row("kinds", K, {"t": body}, schema="sec"),
    ]
    chunk = await kinds_client.post(f"/sync/push-sessions/{push_id}/chunks",
                                    json={"start_row_ordinal": 0, "rows": rows}, headers=auth)
    assert chunk.status_code == 200, chunk.text
    done = await kinds_client.post(f"/sync/push-sessions/{push_id}/commit", headers=auth)
    assert done.status_code == 200, done.text
    assert done.json()["source_id"] == source
    engine = kinds_service.engine
    assert await scalar(
        engine, "SELECT json_build_array(_sync_scope_id, code, body)::text FROM sec.notes"
    ) == json_array(user, code, body)
    assert await scalar(engine, "SELECT t FROM sec.kinds") == body
    assert await scalar(engine, "SELECT source_id FROM sync.bundle_log") == source
    assert await scalar(engine, "SELECT count(*) FROM sync.bundle_rows") == 2
    # Read back over the wire, the text key is the same string.
    page = await kinds_client.get("/sync/committed-bundles/1/rows", headers=auth)
    assert {"code": code} in [r["key"] for r in page.json()["rows"]]


def json_array(*items: str) -> str:
    """PostgreSQL's ``json_build_array`` text of strings (``, `` separated, JSON escaped)."""
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("POST", "/sync/push-sessions/{x}/chunks", 404, "push_session_not_found"),
        ("POST", "/sync/push-sessions/{x}/commit", 404, "push_session_not_found"),
        ("DELETE", "/sync/push-sessions/{x}", 404, "push_session_not_found"),
        ("GET", "/sync/snapshot-sessions/{x}", 404, "snapshot_session_not_found"),
        ("DELETE", "/sync/snapshot-sessions/{x}", 404, "snapshot_session_not_found"),
        ("GET", "/sync/committed-bundles/{x}/rows", 400, "committed_bundle_chunk_invalid"),
        ("GET", "/sync/pull?after_bundle_seq={x}", 400, "invalid_request"),
        ("GET", "/sync/pull?max_bundles={x}", 400, "invalid_request"),
        ("GET", "/sync/committed-bundles/1/rows?max_rows={x}", 400,
         "committed_bundle_chunk_invalid"),
        ("GET", f"/sync/snapshot-sessions/{uid(9)}?after_row_ordinal={{x}}", 400,
         "snapshot_chunk_invalid"),
    ],
)
async def test_hostile_path_and_query_values(
    client: httpx.AsyncClient, service: SyncService, method: str, path: str, status: int,
    code: str,
) -> None:
    await connect(client)
    await push(client, [row("users", K, USER)])
    before = await dump(service.engine)
    hostile = quote("1' OR '1'='1'; DROP TABLE business.users; --", safe="")
    kwargs: dict[str, Any] = {}
    if path.endswith("/chunks"):
        kwargs["json"] = {"start_row_ordinal": 0, "rows": [row("users", uid(2), USER)]}
    resp = await client.request(method, path.format(x=hostile), headers=headers(), **kwargs)
    assert_error(resp, status, code)
    assert await dump(service.engine) == before
