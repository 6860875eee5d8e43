"""A scripted in-memory sync server (``httpx.MockTransport``) and a connected client runtime.

:class:`FakeServer` implements just enough of the push protocol to be honest - it stages
uploaded chunks, commits them as a bundle with a real ``bundle_hash``, serves the committed rows
in pages and answers ``already_committed`` for a tuple it has seen - and lets each test replace
any reply through :attr:`FakeServer.script` to force errors and malformed bodies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from oversync_sa.client import (
    ClientConfig,
    RetryPolicy,
    SyncTable,
    initialize_database,
    install_managed_triggers,
    validate_managed_tables,
)
from oversync_sa.client.runtime import ClientRuntime, prepare_engine
from oversync_sa.client.transport import SyncTransport
from oversync_sa.wire import HashRow, bundle_hash

SCHEMA = "business"
SOURCE = "11111111-1111-4111-8111-111111111111"
USER = "user-1"

DDL = (
    "CREATE TABLE docs (id TEXT PRIMARY KEY NOT NULL, body TEXT)",
    "CREATE TABLE authors (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL)",
    "CREATE TABLE books (id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL,"
    " author_id TEXT REFERENCES authors(id) DEFERRABLE INITIALLY DEFERRED)",
    "CREATE TABLE files (id BLOB PRIMARY KEY NOT NULL, name TEXT NOT NULL, data BLOB)",
)
# books before authors on purpose: the freeze must still send parents first.
TABLES = (
    SyncTable("docs", "id"),
    SyncTable("books", "id"),
    SyncTable("authors", "id"),
    SyncTable("files", "id"),
)

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


def error(status: int, code: str, message: str = "", **extras: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": message or code, **extras})


@dataclass
class Committed:
    seq: int
    source_id: str
    source_bundle_id: int
    rows: list[dict[str, Any]]
    hash: str


@dataclass
class FakeServer:
    """Honest default behaviour; ``script[name]`` holds one-shot replacement replies."""

    next_seq: int = 1
    bundles: dict[tuple[str, int], Committed] = field(default_factory=dict)
    by_seq: dict[int, Committed] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    script: dict[str, list[Reply]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted_sessions: list[str] = field(default_factory=list)
    #: Called with (request name, parsed body) before the default handling.
    on_request: Callable[[str, Any], None] | None = None

    def push_script(self, name: str, *replies: Reply) -> None:
        self.script.setdefault(name, []).extend(replies)

    def named(self, name: str) -> list[httpx.Request]:
        return [r for r in self.requests if _name(r) == name]

    def bodies(self, name: str) -> list[Any]:
        return [msgspec.json.decode(r.content) if r.content else None for r in self.named(name)]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        name = _name(request)
        queued = self.script.get(name)
        if queued:
            reply = queued.pop(0)
            return reply(request) if callable(reply) else reply
        return getattr(self, f"_{name}")(request)

    # -- default behaviour ---------------------------------------------------------------

    def _create(self, request: httpx.Request) -> httpx.Response:
        body = msgspec.json.decode(request.content)
        source = request.headers["Oversync-Source-ID"]
        done = self.bundles.get((source, body["source_bundle_id"]))
        if done is not None:
            return httpx.Response(200, json={
                "status": "already_committed", "bundle_seq": done.seq, "source_id": source,
                "source_bundle_id": done.source_bundle_id, "row_count": len(done.rows),
                "bundle_hash": done.hash,
            })
        push_id = f"push-{len(self.sessions) + 1}"
        self.sessions[push_id] = {"source": source, "body": body, "rows": []}
        return httpx.Response(200, json={
            "push_id": push_id, "status": "staging",
            "planned_row_count": body["planned_row_count"], "next_expected_row_ordinal": 0,
        })

    def _chunk(self, request: httpx.Request) -> httpx.Response:
        push_id = request.url.path.split("/")[3]
        body = msgspec.json.decode(request.content)
        session = self.sessions[push_id]
        session["rows"].extend(body["rows"])
        return httpx.Response(200, json={
            "push_id": push_id, "next_expected_row_ordinal": len(session["rows"]),
        })

    def commit_session(self, push_id: str) -> Committed:
        session = self.sessions[push_id]
        seq = self.next_seq
        self.next_seq += 1
        rows = [
            {k: v for k, v in {
                "schema": r["schema"], "table": r["table"], "key": r["key"], "op": r["op"],
                "row_version": seq, "payload": r.get("payload"),
            }.items() if v is not None}
            for r in session["rows"]
        ]
        digest = hash_rows(rows)
        done = Committed(seq, session["source"], session["body"]["source_bundle_id"], rows, digest)
        self.bundles[(done.source_id, done.source_bundle_id)] = done
        self.by_seq[seq] = done
        return done

    def _commit(self, request: httpx.Request) -> httpx.Response:
        done = self.commit_session(request.url.path.split("/")[3])
        return httpx.Response(200, json=commit_body(done))

    def _delete(self, request: httpx.Request) -> httpx.Response:
        self.deleted_sessions.append(request.url.path.split("/")[3])
        return httpx.Response(204)

    def _rows(self, request: httpx.Request) -> httpx.Response:
        done = self.by_seq[int(request.url.path.split("/")[3])]
        after = int(request.url.params.get("after_row_ordinal", "-1"))
        limit = int(request.url.params["max_rows"])
        page = done.rows[after + 1 : after + 1 + limit]
        return httpx.Response(200, json={
            "bundle_seq": done.seq, "source_id": done.source_id,
            "source_bundle_id": done.source_bundle_id, "row_count": len(done.rows),
            "bundle_hash": done.hash, "rows": page, "next_row_ordinal": after + len(page),
            "has_more": after + len(page) < len(done.rows) - 1,
        })


def commit_body(done: Committed) -> dict[str, Any]:
    return {
        "bundle_seq": done.seq, "source_id": done.source_id,
        "source_bundle_id": done.source_bundle_id, "row_count": len(done.rows),
        "bundle_hash": done.hash,
    }


def hash_rows(rows: list[dict[str, Any]]) -> str:
    return bundle_hash(
        (
            HashRow(r["schema"], r["table"], r["key"], r["op"], r["row_version"],
                    msgspec.json.encode(r["payload"]) if "payload" in r else None)
            for r in rows
        ),
        payloads_canonical=False,
    )[0]


def _name(request: httpx.Request) -> str:
    path = request.url.path
    if path == "/sync/push-sessions":
        return "create"
    if path.endswith("/chunks"):
        return "chunk"
    if path.endswith("/commit"):
        return "commit"
    if path.startswith("/sync/committed-bundles/"):
        return "rows"
    if path.startswith("/sync/push-sessions/") and request.method == "DELETE":
        return "delete"
    raise AssertionError(f"unexpected request {request.method} {path}")


FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)


@dataclass
class Harness:
    engine: AsyncEngine
    server: FakeServer
    path: Path
    tables: tuple[SyncTable, ...] = TABLES

    async def runtime(self, **config: Any) -> ClientRuntime:
        """A fresh connected runtime (as after open + attach), e.g. after a "restart"."""
        cfg = ClientConfig(
            SCHEMA, self.tables, retry_policy=config.pop("retry", FAST_RETRY), **config
        )
        async with self.engine.begin() as conn:
            managed = await validate_managed_tables(conn, cfg)
        runtime = ClientRuntime(
            engine=self.engine, config=cfg, managed=managed,
            transport=SyncTransport(
                "http://sync.test", lambda: "token",
                source_id=lambda: SOURCE, retry_policy=cfg.effective_retry_policy,
                transport=httpx.MockTransport(self.server.handler),
            ),
            ownership_key=f"test:{self.path}", source_id=SOURCE, user_id=USER,
            session_connected=True,
        )
        return runtime

    async def sql(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        async with self.engine.begin() as conn:
            await conn.exec_driver_sql(statement, params)

    def writes_hook(self, *statements: str) -> Callable[[Any], Awaitable[None]]:
        """A runtime hook (e.g. ``before_push_commit``) that makes ``statements`` as application
        writes, each in its own transaction: edits made while a push is under way."""

        async def hook(_conn: Any) -> None:
            for statement in statements:
                await self.sql(statement)

        return hook

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self.engine.connect() as conn:
            return [tuple(r) for r in await conn.exec_driver_sql(sql, params)]

    async def value(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return (await self.rows(sql, params))[0][0]

    async def dirty(self) -> list[tuple[Any, ...]]:
        return await self.rows(
            "SELECT table_name, key_json, op, base_row_version, payload FROM _sync_dirty_rows"
            " ORDER BY dirty_ordinal"
        )

    async def outbox_state(self) -> tuple[Any, ...]:
        return (await self.rows(
            "SELECT state, source_bundle_id, row_count, remote_bundle_seq FROM _sync_outbox_bundle"
        ))[0]

    async def next_bundle_id(self) -> int:
        return int(await self.value(
            "SELECT next_source_bundle_id FROM _sync_source_state WHERE source_id = ?", (SOURCE,)
        ))

    async def checkpoint(self) -> int:
        return int(await self.value("SELECT last_bundle_seq_seen FROM _sync_attachment_state"))

    async def row_state(self, table: str, key_json: str) -> tuple[Any, ...] | None:
        found = await self.rows(
            "SELECT row_version, deleted FROM _sync_row_state"
            " WHERE table_name = ? AND key_json = ?",
            (table, key_json),
        )
        return found[0] if found else None

    async def synced(self, table: str, key: str, columns: str, version: int) -> None:
        """A row as if pulled: written in apply mode with a live row state."""
        async with self.engine.begin() as conn:
            await conn.exec_driver_sql("UPDATE _sync_apply_state SET apply_mode = 1")
            await conn.exec_driver_sql(f"INSERT INTO {table} VALUES ({columns})")
            await conn.exec_driver_sql(
                "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version,"
                " deleted) VALUES (?, ?, ?, ?, 0)", (SCHEMA, table, f'{{"id":"{key}"}}', version),
            )
            await conn.exec_driver_sql("UPDATE _sync_apply_state SET apply_mode = 0")


@asynccontextmanager
async def open_harness(
    path: Path, ddl: Iterable[str] = DDL, tables: tuple[SyncTable, ...] = TABLES
) -> AsyncIterator[Harness]:
    """A connected, attached database at ``path`` with ``ddl`` managed as ``tables``."""
    engine = prepare_engine(create_async_engine(f"sqlite+aiosqlite:///{path}"))
    try:
        async with engine.connect() as conn:
            await initialize_database(conn)
        async with engine.begin() as conn:
            for statement in ddl:
                await conn.exec_driver_sql(statement)
            managed = await validate_managed_tables(conn, ClientConfig(SCHEMA, tables))
            await install_managed_triggers(conn, managed)
            await conn.exec_driver_sql(
                "INSERT INTO _sync_source_state (source_id) VALUES (?)", (SOURCE,)
            )
            await conn.exec_driver_sql(
                "UPDATE _sync_attachment_state SET current_source_id = ?,"
                " binding_state = 'attached', attached_user_id = ?, schema_name = ?",
                (SOURCE, USER, SCHEMA),
            )
        yield Harness(engine, FakeServer(), path, tables)
    finally:
        await engine.dispose()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_harness(tmp_path / "client.db") as opened:
        yield opened
