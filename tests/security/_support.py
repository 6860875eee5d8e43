"""Helpers of the bad-input and security suite: protocol steps over HTTP and database dumps.

The app, service and request builders are the HTTP tests' own (:mod:`tests.http.http_support`);
this module only adds what every security test needs: driving a push step by step, and a
complete dump of the business and ``sync`` schemas to prove that a refused request changed
nothing at all.
"""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.http.http_support import headers

Client = httpx.AsyncClient
#: ``{"schema.table": sorted rows as JSON text}``
Dump = dict[str, list[str]]

_TABLES = sa.text(
    "SELECT table_schema, table_name FROM information_schema.tables "
    "WHERE table_schema = ANY(:schemas) AND table_type = 'BASE TABLE' "
    "ORDER BY table_schema, table_name"
)


async def dump(engine: AsyncEngine, schemas: tuple[str, ...] = ("business", "sync")) -> Dump:
    """Every row of every table in ``schemas``, as sorted JSON text per table.

    Comparing two dumps is the strongest "nothing changed" check there is: business rows,
    staged rows, sessions, bundle log, row state, source state and user state alike.
    """
    result: Dump = {}
    async with engine.connect() as conn:
        tables = (await conn.execute(_TABLES, {"schemas": list(schemas)})).all()
        for schema, table in tables:
            quoted = f'"{schema}"."{table}"'
            select = f"SELECT row_to_json(dumped)::text FROM {quoted} AS dumped"
            rows = await conn.execute(sa.text(select))
            result[f"{schema}.{table}"] = sorted(str(r[0]) for r in rows)
    return result


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(sa.text(sql), params)


def assert_error(resp: httpx.Response, status: int, code: str, fragment: str = "") -> None:
    """``resp`` is the contract's JSON error ``code`` with ``status``; ``fragment`` is in the
    message when given."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert body["error"] == code, body
    assert fragment in body["message"], body


async def connect(client: Client, user: str = "alice", source: str = "device-a") -> None:
    resp = await client.post(
        "/sync/connect", json={"has_local_pending_rows": False}, headers=headers(user, source)
    )
    assert resp.status_code == 200, resp.text


async def create_session(
    client: Client, planned: int, *, user: str = "alice", source: str = "device-a", sbid: int = 1
) -> str:
    resp = await client.post(
        "/sync/push-sessions",
        json={"source_bundle_id": sbid, "planned_row_count": planned},
        headers=headers(user, source),
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "staging", resp.text
    return str(resp.json()["push_id"])


async def upload(
    client: Client,
    push_id: str,
    rows: list[dict[str, Any]],
    *,
    start: int = 0,
    user: str = "alice",
    source: str = "device-a",
) -> httpx.Response:
    return await client.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": start, "rows": rows},
        headers=headers(user, source),
    )


async def commit(
    client: Client, push_id: str, *, user: str = "alice", source: str = "device-a"
) -> httpx.Response:
    return await client.post(
        f"/sync/push-sessions/{push_id}/commit", headers=headers(user, source)
    )


async def push(
    client: Client,
    rows: list[dict[str, Any]],
    *,
    user: str = "alice",
    source: str = "device-a",
    sbid: int = 1,
) -> dict[str, Any]:
    """A whole successful push of ``rows`` in one chunk; returns the commit answer."""
    push_id = await create_session(client, len(rows), user=user, source=source, sbid=sbid)
    chunk = await upload(client, push_id, rows, user=user, source=source)
    assert chunk.status_code == 200, chunk.text
    done = await commit(client, push_id, user=user, source=source)
    assert done.status_code == 200, done.text
    return dict(done.json())


def row(
    table: str,
    key: str,
    payload: dict[str, Any] | None = None,
    *,
    op: str = "INSERT",
    base: int = 0,
    schema: str = "business",
    key_column: str = "id",
) -> dict[str, Any]:
    """A push row; ``payload=None`` leaves the member out."""
    built: dict[str, Any] = {
        "schema": schema,
        "table": table,
        "key": {key_column: key},
        "op": op,
        "base_row_version": base,
    }
    if payload is not None:
        built["payload"] = payload
    return built
