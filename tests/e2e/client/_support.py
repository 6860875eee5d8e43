"""The real client against the real reference server: process, devices, verification helpers.

The server is ``python -m examples.litestar_server`` (uvicorn) on a free port over a fresh
PostgreSQL database; each :class:`Device` is a :class:`~oversync_sa.client.SyncClient` over its
own SQLite file whose tables come from ``client_projection(BusinessBase)``. Tests isolate
themselves by user id (bundle sequences, row state and scopes are per user on the server), so
one server process serves a whole test module.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from examples.business_models import BusinessBase
from examples.litestar_server.app import build_service
from examples.litestar_server.settings import Settings
from oversync_sa.client.client import SyncClient
from oversync_sa.client.config import ClientConfig, RetryPolicy, SyncTable
from oversync_sa.client.conflicts import ConflictResolver
from oversync_sa.metadata import client_projection
from oversync_sa.server import SyncService
from oversync_sa.server.writes import BundleWriter, ScopeWriteResult
from tests import _live_server

JWT_SECRET = "client-e2e-secret-that-is-long-enough-for-hs256"
SCHEMA = "business"

#: Local writes of the §10.1 business tables most tests make.
INSERT_USER = "INSERT INTO users (id, name, email) VALUES (?, ?, ?)"
INSERT_POST = "INSERT INTO posts (id, title, content, author_id) VALUES (?, ?, ?, ?)"
#: A server-originated user row (PostgreSQL side, for ``Harness.server_write``); binds ``:id``.
SERVER_INSERT_USER = (
    "INSERT INTO business.users (_sync_scope_id, id, name, email)"
    " VALUES (:scope, :id, 'Server', 'server@example.com')"
)
INSERT_CATEGORY = "INSERT INTO categories (id, name, parent_id) VALUES (?, ?, ?)"

#: Parents before children, as ``ClientConfig.from_models`` would list them.
TABLES = (
    "users", "posts", "categories", "teams", "team_members", "files", "file_reviews",
    "typed_rows",
)
#: Retries that do not slow a test down when a transport failure is injected.
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
NO_RETRY = RetryPolicy(enabled=False)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def new_user(prefix: str = "user") -> str:
    """A user nobody else in the module uses: each test gets fresh server scopes."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- server process


class ServerProcess(_live_server.ServerProcess):
    """The reference server as a child process, signing tokens with :data:`JWT_SECRET`."""

    def __init__(self, database_url: str, log: Path) -> None:
        super().__init__(database_url, log, jwt_secret=JWT_SECRET, pool_max_conns=8)


# --------------------------------------------------------------------------- transports


class LossyTransport(httpx.AsyncBaseTransport):
    """The real network transport, with one-shot failures injected around chosen requests.

    ``drop_reply_after(predicate)`` lets the next matching request reach the server (which
    processes it completely) and then loses the reply, as a dropped connection would.
    ``fail_before(predicate)`` fails the next matching request without sending it.
    """

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._drop_after: list[Callable[[httpx.Request], bool]] = []
        self._fail_before: list[Callable[[httpx.Request], bool]] = []
        self.requests: list[tuple[str, str]] = []
        self.dropped: list[str] = []

    def drop_reply_after(self, predicate: Callable[[httpx.Request], bool]) -> None:
        self._drop_after.append(predicate)

    def fail_before(self, predicate: Callable[[httpx.Request], bool]) -> None:
        self._fail_before.append(predicate)

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.endswith(suffix))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        for index, predicate in enumerate(self._fail_before):
            if predicate(request):
                del self._fail_before[index]
                self.dropped.append(request.url.path)
                raise httpx.ConnectError("injected: request never sent", request=request)
        response = await self._inner.handle_async_request(request)
        for index, predicate in enumerate(self._drop_after):
            if predicate(request):
                del self._drop_after[index]
                await response.aread()
                await response.aclose()
                self.dropped.append(request.url.path)
                raise httpx.ReadError("injected: reply lost after the server processed it",
                                      request=request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def is_commit(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith("/commit")


def is_push_create(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path == "/sync/push-sessions"


class InjectedCrash(Exception):
    """Raised by a one-shot client hook to stop an operation at a crash boundary."""


def crash_hook(label: str) -> Callable[[Any], Awaitable[None]]:
    async def hook(_conn: Any) -> None:
        raise InjectedCrash(label)

    return hook


# --------------------------------------------------------------------------- harness


@dataclass
class Harness:
    """One live server for a test module, plus direct PostgreSQL access to verify it."""

    server: ServerProcess
    database_url: str
    pg: AsyncEngine
    tmp: Path
    devices: list[Device] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict)
    _service: SyncService | None = None
    _http: httpx.AsyncClient | None = None

    @property
    def base_url(self) -> str:
        return self.server.base_url

    async def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.base_url, timeout=30)
        return self._http

    async def token(self, user: str) -> str:
        # Tokens live 300 s: ample for a test module; cached so devices share one sign-in.
        cached = self._tokens.get(user)
        if cached is None:
            client = await self.http()
            resp = await client.post("/dummy-signin", json={"user": user, "password": "x"})
            assert resp.status_code == 200, resp.text
            cached = self._tokens[user] = str(resp.json()["token"])
        return cached

    async def set_retention_floor(self, user: str, floor: int) -> None:
        client = await self.http()
        resp = await client.post(
            "/test/retention-floor", json={"user_id": user, "retained_bundle_floor": floor}
        )
        assert resp.status_code == 200, resp.text

    async def service(self) -> SyncService:
        """A second :class:`SyncService` on the server's database, for server-side writes."""
        if self._service is None:
            settings = Settings(database_url=self.database_url, jwt_secret=JWT_SECRET)
            self._service = build_service(self.pg, settings)
            await self._service.bootstrap()
        return self._service

    async def server_write(
        self, user: str, statements: Iterable[tuple[str, dict[str, Any]]], writer: str = "srv"
    ) -> ScopeWriteResult:
        """Run ``statements`` as one server-originated bundle of ``writer`` in ``user``'s scope.

        ``:scope`` is bound to the user in every statement.
        """
        stmts = list(statements)

        async def run(bundle: BundleWriter) -> None:
            for sql, params in stmts:
                await bundle.connection.execute(sa.text(sql), {"scope": user, **params})

        service = await self.service()
        return await service.scope_manager().exec_write(user, run, writer_id=writer)

    async def server_rows(
        self, user: str, table: str, columns: str = "*", order: str = "id"
    ) -> list[dict[str, Any]]:
        async with self.pg.connect() as conn:
            result = await conn.execute(
                sa.text(
                    f"SELECT {columns} FROM {SCHEMA}.{table} WHERE _sync_scope_id = :u"
                    f" ORDER BY {order}"
                ),
                {"u": user},
            )
            return [dict(r._mapping) for r in result]

    async def server_scalar(self, sql: str, **params: Any) -> Any:
        async with self.pg.connect() as conn:
            return await conn.scalar(sa.text(sql), params)

    async def server_execute(self, sql: str, **params: Any) -> int:
        async with self.pg.begin() as conn:
            result = await conn.execute(sa.text(sql), params)
            return int(result.rowcount)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    # -- devices ---------------------------------------------------------------------------

    async def device(
        self,
        name: str,
        *,
        path: Path | None = None,
        user: str = "",
        resolver: ConflictResolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = FAST_RETRY,
        create_tables: bool = True,
        **config: Any,
    ) -> Device:
        """An opened client over ``path`` (default: a new file named after ``name``)."""
        db_path = path if path is not None else self.tmp / f"{name}-{uuid.uuid4().hex[:8]}.db"
        device = Device(self, name, db_path, user)
        self.devices.append(device)
        await device.start(
            resolver=resolver, transport=transport, retry=retry,
            create_tables=create_tables, **config,
        )
        return device


def client_config(retry: RetryPolicy | None = FAST_RETRY, **options: Any) -> ClientConfig:
    return ClientConfig(
        SCHEMA, tuple(SyncTable(t, "id") for t in TABLES), retry_policy=retry, **options
    )


class Device:
    """One installation: a SQLite file and the live client over it.

    ``user`` is whom the token provider signs in as; change it before attaching another user.
    ``restart()`` closes the client and its engine and builds a new client over the same file,
    the way an app process restarts.
    """

    def __init__(self, harness: Harness, name: str, path: Path, user: str) -> None:
        self.harness = harness
        self.name = name
        self.path = path
        self.user = user
        self.engine: AsyncEngine | None = None
        self.client: SyncClient | None = None
        self._options: dict[str, Any] = {}

    @property
    def c(self) -> SyncClient:
        assert self.client is not None, f"{self.name} is closed"
        return self.client

    async def _token(self) -> str:
        assert self.user, f"{self.name} has no user to sign in as"
        return await self.harness.token(self.user)

    async def start(
        self,
        *,
        resolver: ConflictResolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = FAST_RETRY,
        create_tables: bool = True,
        **config: Any,
    ) -> None:
        self._options = {"resolver": resolver, "transport": transport, "retry": retry, **config}
        self.engine = create_async_engine(f"sqlite+aiosqlite:///{self.path}")
        if create_tables:
            async with self.engine.begin() as conn:
                await conn.run_sync(client_projection(BusinessBase).create_all)
        self.client = await SyncClient.create(
            self.engine, self.harness.base_url, self._token, client_config(retry, **config),
            http_transport=transport,
        )
        self.client.runtime.resolver = resolver
        await self.client.open()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None

    async def restart(self, **overrides: Any) -> None:
        """Close everything and reopen over the same file (no attach: that is the caller's)."""
        options = {**self._options, **overrides}
        await self.close()
        await self.start(create_tables=False, **options)

    async def copy_to(self, target: Path) -> None:
        """A byte copy of the database (a restored backup / cloned install), taken closed."""
        await self.close()
        await asyncio.to_thread(_copy_database, self.path, target)

    # -- local SQL -------------------------------------------------------------------------

    async def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> None:
        """One application write, in its own transaction (captured by the triggers)."""
        assert self.engine is not None
        async with self.engine.begin() as conn:
            await conn.exec_driver_sql(sql, params)

    async def execute_many(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        """Several application writes in one transaction."""
        assert self.engine is not None
        async with self.engine.begin() as conn:
            for sql, params in statements:
                await conn.exec_driver_sql(sql, params)

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self.engine is not None
        async with self.engine.connect() as conn:
            return [tuple(r) for r in await conn.exec_driver_sql(sql, params)]

    async def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        found = await self.rows(sql, params)
        return found[0][0] if found else None

    async def ids(self, table: str) -> set[uuid.UUID]:
        return {uuid.UUID(bytes=r[0]) for r in await self.rows(f"SELECT id FROM {table}")}

    async def table(self, table: str, columns: str) -> dict[uuid.UUID, tuple[Any, ...]]:
        """``{id: (columns...)}`` of a local table (ids are 16-byte BLOBs locally)."""
        found = await self.rows(f"SELECT id, {columns} FROM {table}")
        return {uuid.UUID(bytes=r[0]): tuple(r[1:]) for r in found}

    async def dirty_count(self) -> int:
        return int(await self.scalar("SELECT COUNT(*) FROM _sync_dirty_rows"))

    async def outbox_count(self) -> int:
        return int(await self.scalar("SELECT COUNT(*) FROM _sync_outbox_rows"))

    async def next_source_bundle_id(self) -> int:
        source = self.c.runtime.source_id
        return int(await self.scalar(
            "SELECT next_source_bundle_id FROM _sync_source_state WHERE source_id = ?", (source,)
        ))

    async def attach(self, user: str | None = None) -> Any:
        if user is not None:
            self.user = user
        result = await self.c.attach(self.user)
        # retry_later is a normal outcome; the tests that want it ask for it explicitly.
        for _ in range(40):
            if result.status.value != "retry_later":
                break
            await asyncio.sleep(max(result.retry_after, 0.05))
            result = await self.c.attach(self.user)
        return result


def _copy_database(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{source}{suffix}")
        if src.exists():
            shutil.copyfile(src, Path(f"{target}{suffix}"))


async def server_ids(harness: Harness, user: str, table: str) -> set[uuid.UUID]:
    return {r["id"] for r in await harness.server_rows(user, table, "id")}


def uid_sql(value: uuid.UUID) -> bytes:
    """The local (SQLite) representation of a UUID key or FK value."""
    return value.bytes


async def two_devices(
    harness: Harness,
    resolver: Any = None,
    *,
    a_options: dict[str, Any] | None = None,
    b_options: dict[str, Any] | None = None,
) -> tuple[str, Device, Device]:
    """Devices ``a`` and ``b`` attached to one fresh user; ``b`` has ``resolver``.

    ``a_options`` and ``b_options`` are further :meth:`Harness.device` arguments of each
    (a transport, a retry policy, client configuration).
    """
    user = new_user()
    a = await harness.device("a", user=user, **(a_options or {}))
    b = await harness.device("b", user=user, resolver=resolver, **(b_options or {}))
    await a.attach()
    await b.attach()
    return user, a, b
