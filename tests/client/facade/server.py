"""An in-memory sync server for facade, background and watch tests (``httpx.MockTransport``).

Honest by default: connect answers ``initialize_empty``, pushes are staged, committed with a
real ``bundle_hash`` and served back; pulls serve every committed bundle (ours and those added
with :meth:`SyncServer.commit_external`); ``/sync/watch`` serves queued SSE replies.
``script[name]`` holds one-shot replacement replies per request name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from oversync_sa.client import (
    ClientConfig,
    RetryPolicy,
    SyncClient,
    SyncOperationInProgressError,
    SyncTable,
)
from tests.client.push.conftest import hash_rows

SCHEMA = "business"
BASE_URL = "http://sync.test"
DDL = (
    "CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS posts (id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL,"
    " author_id TEXT REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED)",
)
FAST_RETRY = RetryPolicy(initial_backoff=0.001, max_backoff=0.002)

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


def config(**overrides: Any) -> ClientConfig:
    options: dict[str, Any] = {
        "retry_policy": FAST_RETRY, "backoff_min": 0.01, "backoff_max": 0.04,
        "upload_limit": 1,
    }
    options.update(overrides)
    return ClientConfig(
        SCHEMA, (SyncTable("users", "id"), SyncTable("posts", "id")), **options
    )


def error(status: int, code: str, message: str = "", **extras: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": message or code, **extras})


def user_row(key: str, name: str, op: str = "INSERT") -> dict[str, Any]:
    row: dict[str, Any] = {"schema": SCHEMA, "table": "users", "key": {"id": key}, "op": op}
    if op != "DELETE":
        row["payload"] = {"id": key, "name": name}
    return row


async def _chunks(parts: Iterable[bytes], hold: asyncio.Event | None) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
        await asyncio.sleep(0)
    if hold is not None:
        await hold.wait()


def sse(*parts: bytes | str, hold: asyncio.Event | None = None) -> httpx.Response:
    """A ``text/event-stream`` reply sending ``parts``, then open until ``hold`` is set."""
    encoded = [p.encode() if isinstance(p, str) else p for p in parts]
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=_chunks(encoded, hold)
    )


def bundle_event(seq: int) -> str:
    return f'event: bundle\ndata: {{"bundle_seq":{seq},"source_id":"other"}}\n\n'


@dataclass
class Bundle:
    seq: int
    source_id: str
    source_bundle_id: int
    rows: list[dict[str, Any]]
    hash: str

    def wire(self) -> dict[str, Any]:
        return {
            "bundle_seq": self.seq, "source_id": self.source_id,
            "source_bundle_id": self.source_bundle_id, "row_count": len(self.rows),
            "bundle_hash": self.hash, "rows": self.rows,
        }


@dataclass
class SyncServer:
    features: dict[str, bool] = field(
        default_factory=lambda: {"connect_lifecycle": True, "bundle_change_watch": False}
    )
    bundles: list[Bundle] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    script: dict[str, list[Reply]] = field(default_factory=dict)
    #: Replies to ``GET /sync/watch`` in order; the last one repeats.
    watch: list[Reply] = field(default_factory=list)
    external_bundle_ids: int = 0

    # -- test helpers ----------------------------------------------------------------------

    def push_script(self, name: str, *replies: Reply) -> None:
        self.script.setdefault(name, []).extend(replies)

    def named(self, name: str) -> list[httpx.Request]:
        return [r for r in self.requests if _name(r) == name]

    def commit_external(self, *rows: dict[str, Any], source: str = "other") -> Bundle:
        """Commit a bundle from another device; rows get ``row_version`` = its seq."""
        self.external_bundle_ids += 1
        return self._commit(source, self.external_bundle_ids, [dict(r) for r in rows])

    @property
    def latest(self) -> int:
        return self.bundles[-1].seq if self.bundles else 0

    def pushed_rows(self) -> list[dict[str, Any]]:
        return [row for b in self.bundles if b.source_id != "other" for row in b.rows]

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    # -- dispatch --------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        name = _name(request)
        queued = self.script.get(name)
        if queued:
            reply = queued.pop(0)
            return reply(request) if callable(reply) else reply
        handler: Callable[[httpx.Request], httpx.Response] = getattr(self, f"_on_{name}")
        return handler(request)

    def _on_capabilities(self, _request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "protocol_version": "1", "schema_version": 1, "features": self.features,
        })

    def _on_connect(self, _request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"resolution": "initialize_empty"})

    def _on_watch(self, request: httpx.Request) -> httpx.Response:
        if not self.watch:
            return httpx.Response(404, text="no watch")
        reply = self.watch.pop(0) if len(self.watch) > 1 else self.watch[0]
        return reply(request) if callable(reply) else reply

    def _on_pull(self, request: httpx.Request) -> httpx.Response:
        after = int(request.url.params["after_bundle_seq"])
        limit = int(request.url.params["max_bundles"])
        target = int(request.url.params.get("target_bundle_seq", "0")) or self.latest
        ready = [b for b in self.bundles if after < b.seq <= target]
        page = ready[:limit]
        return httpx.Response(200, json={
            "stable_bundle_seq": target, "bundles": [b.wire() for b in page],
            "has_more": len(ready) > len(page),
        })

    def _on_create(self, request: httpx.Request) -> httpx.Response:
        body = msgspec.json.decode(request.content)
        push_id = f"push-{len(self.sessions) + 1}"
        self.sessions[push_id] = {
            "source": request.headers["Oversync-Source-ID"], "body": body, "rows": [],
        }
        return httpx.Response(200, json={
            "push_id": push_id, "status": "staging",
            "planned_row_count": body["planned_row_count"], "next_expected_row_ordinal": 0,
        })

    def _on_chunk(self, request: httpx.Request) -> httpx.Response:
        push_id = request.url.path.split("/")[3]
        session = self.sessions[push_id]
        session["rows"].extend(msgspec.json.decode(request.content)["rows"])
        return httpx.Response(200, json={
            "push_id": push_id, "next_expected_row_ordinal": len(session["rows"]),
        })

    def _commit(self, source: str, source_bundle_id: int, rows: list[dict[str, Any]]) -> Bundle:
        seq = self.latest + 1
        committed = [
            {k: v for k, v in {
                "schema": r["schema"], "table": r["table"], "key": r["key"], "op": r["op"],
                "row_version": seq, "payload": r.get("payload"),
            }.items() if v is not None}
            for r in rows
        ]
        bundle = Bundle(seq, source, source_bundle_id, committed, hash_rows(committed))
        self.bundles.append(bundle)
        return bundle

    def _on_commit(self, request: httpx.Request) -> httpx.Response:
        session = self.sessions[request.url.path.split("/")[3]]
        bundle = self._commit(
            session["source"], session["body"]["source_bundle_id"], session["rows"]
        )
        wire = bundle.wire()
        del wire["rows"]
        return httpx.Response(200, json=wire)

    def _on_delete(self, _request: httpx.Request) -> httpx.Response:
        return httpx.Response(204)

    def _on_rows(self, request: httpx.Request) -> httpx.Response:
        seq = int(request.url.path.split("/")[3])
        bundle = next(b for b in self.bundles if b.seq == seq)
        after = int(request.url.params.get("after_row_ordinal", "-1"))
        limit = int(request.url.params["max_rows"])
        page = bundle.rows[after + 1 : after + 1 + limit]
        wire = bundle.wire()
        wire.update(
            rows=page, next_row_ordinal=after + len(page),
            has_more=after + len(page) < len(bundle.rows) - 1,
        )
        return httpx.Response(200, json=wire)


def _name(request: httpx.Request) -> str:
    path = request.url.path
    simple = {
        "/sync/capabilities": "capabilities", "/sync/connect": "connect",
        "/sync/pull": "pull", "/sync/watch": "watch", "/sync/push-sessions": "create",
    }
    if path in simple:
        return simple[path]
    if path.endswith("/chunks"):
        return "chunk"
    if path.endswith("/commit"):
        return "commit"
    if path.startswith("/sync/committed-bundles/"):
        return "rows"
    if path.startswith("/sync/push-sessions/") and request.method == "DELETE":
        return "delete"
    raise AssertionError(f"unexpected request {request.method} {path}")


async def make_client(
    path: Path, server: SyncServer, cfg: ClientConfig | None = None, **create: Any
) -> SyncClient:
    import sqlite3

    with sqlite3.connect(path) as raw:
        for statement in DDL:
            raw.execute(statement)
    return await SyncClient.create(
        path, BASE_URL, lambda: "tok", cfg or config(), http_transport=server.transport,
        **create,
    )


async def attached(client: SyncClient, user: str = "u1") -> SyncClient:
    await client.open()
    await client.attach(user)
    return client


async def attach_retrying(client: SyncClient, user: str = "u1") -> None:
    """Attach while background loops may hold the non-blocking lock (§12.21)."""
    while True:
        try:
            await client.attach(user)
            return
        except SyncOperationInProgressError:
            await asyncio.sleep(0.001)


async def execute(client: SyncClient, sql: str, params: tuple[Any, ...] = ()) -> None:
    async with client.runtime.engine.begin() as conn:
        await conn.exec_driver_sql(sql, params)


async def query(client: SyncClient, sql: str) -> list[tuple[Any, ...]]:
    async with client.runtime.engine.connect() as conn:
        return [tuple(r) for r in await conn.exec_driver_sql(sql)]


async def eventually(check: Callable[[], Any], within: float = 10.0) -> None:
    """Poll ``check`` (sync or async) until truthy; fails the test after ``within`` seconds.

    The generous timeout only matters on a loaded machine: passing runs return in milliseconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
