"""A scripted fake sync server (httpx.MockTransport) and client factory for client tests."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from oversync_sa.client import ClientConfig, RetryPolicy, SyncTable
from oversync_sa.client.client import SyncClient

SCHEMA = "business"
DDL = (
    "CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL)",
    "CREATE TABLE posts (id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL, author_id TEXT"
    " REFERENCES users(id))",
)
CONFIG = ClientConfig(
    SCHEMA,
    (SyncTable("users", sync_key_column="id"), SyncTable("posts", sync_key_column="id")),
    snapshot_chunk_rows=2,
    download_limit=2,
    retry_policy=RetryPolicy(initial_backoff=0.001, max_backoff=0.002),
)

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


def ok(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def error(status: int, code: str, message: str = "", **extras: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": message, **extras})


CAPS = ok({"protocol_version": "1", "schema_version": 1, "features": {"connect_lifecycle": True}})


class FakeServer:
    """Replies per ``"METHOD /path"``: queued responses first, then a sticky default."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[Reply]] = defaultdict(deque)
        self.defaults: dict[str, Reply] = {}
        self.requests: list[httpx.Request] = []

    def queue(self, route: str, *replies: Reply) -> None:
        self.queues[route].extend(replies)

    def default(self, route: str, reply: Reply) -> None:
        self.defaults[route] = reply

    def count(self, route: str) -> int:
        return sum(1 for r in self.requests if f"{r.method} {r.url.path}" == route)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = f"{request.method} {request.url.path}"
        queue = self.queues.get(route)
        reply: Reply | None = queue.popleft() if queue else self.defaults.get(route)
        if reply is None:
            return httpx.Response(404, text="no route " + route)
        return reply(request) if callable(reply) else reply

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


def snapshot_routes(
    server: FakeServer, rows: list[dict[str, Any]], *, seq: int = 5, snapshot_id: str = "snap-1"
) -> None:
    """Serve one snapshot session of ``rows`` paged by ``max_rows``."""
    server.queue("POST /api/sync/snapshot-sessions", ok({
        "snapshot_id": snapshot_id, "snapshot_bundle_seq": seq, "row_count": len(rows),
        "expires_at": "2099-01-01T00:00:00Z",
    }))

    def chunk(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params["after_row_ordinal"])
        limit = int(request.url.params["max_rows"])
        page = rows[after : after + limit]
        return ok({
            "snapshot_id": snapshot_id, "snapshot_bundle_seq": seq, "rows": page,
            "next_row_ordinal": after + len(page), "has_more": after + len(page) < len(rows),
        })

    server.default(f"GET /api/sync/snapshot-sessions/{snapshot_id}", chunk)
    server.default(f"DELETE /api/sync/snapshot-sessions/{snapshot_id}", httpx.Response(204))


def user_row(key: str, name: str, version: int = 1, op: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "schema": SCHEMA, "table": "users", "key": {"id": key}, "row_version": version,
        "payload": {"id": key, "name": name},
    }
    if op is not None:
        row["op"] = op
    return row


async def make_client(path: Path, server: FakeServer, config: ClientConfig = CONFIG) -> SyncClient:
    import sqlite3

    with sqlite3.connect(path) as raw:
        for statement in DDL:
            raw.execute(statement.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
    return await SyncClient.create(
        path, "http://sync.test/api/", lambda: "tok", config, http_transport=server.transport
    )


async def dispose(client: SyncClient) -> None:
    """Close ``client`` and dispose of its engine (what a test does where an app would exit)."""
    await client.close()
    await client.runtime.engine.dispose()


@asynccontextmanager
async def closing(client: SyncClient) -> AsyncIterator[SyncClient]:
    """``client`` for the ``with`` block, disposed of afterwards (see :func:`dispose`)."""
    try:
        yield client
    finally:
        await dispose(client)


async def scalar(client: SyncClient, sql: str) -> object:
    async with client.runtime.engine.connect() as conn:
        return (await conn.exec_driver_sql(sql)).scalar()


async def write(client: SyncClient, sql: str, params: tuple[Any, ...] = ()) -> None:
    """One statement in its own transaction on ``client``'s database."""
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql(sql, params)


async def formerly_managed_table(client: SyncClient, table: str = "legacy") -> None:
    """A table an older configuration managed (not in the client's configuration now), with
    one row ``legacy-1`` and that row's row state at version 9."""
    await write(client, f"CREATE TABLE {table} (id TEXT PRIMARY KEY NOT NULL, body TEXT)")
    await write(client, f"INSERT INTO {table} VALUES ('legacy-1', 'stale body')")
    await write(client, f"INSERT INTO _sync_managed_tables VALUES ('business', '{table}')")
    await write(client, "INSERT INTO _sync_row_state (schema_name, table_name, key_json,"
                        " row_version, deleted) VALUES ('business', ?, '{\"id\":\"legacy-1\"}',"
                        " 9, 0)", (table,))


def connect_reply(server: FakeServer, resolution: str = "initialize_empty") -> None:
    """Advertise the capabilities and answer the next connect with ``resolution``."""
    server.default("GET /api/sync/capabilities", CAPS)
    server.queue("POST /api/sync/connect", ok({"resolution": resolution}))


async def attached(client: SyncClient, server: FakeServer, user: str = "u1") -> None:
    """Open ``client`` and attach it as ``user`` to an empty server scope."""
    await client.open()
    connect_reply(server)
    await client.attach(user)


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None
