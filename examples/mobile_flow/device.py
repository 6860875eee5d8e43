"""One simulated phone: a SQLite file, an oversync client, a sign-in session and sync loops.

Mirrors go-oversync's ``MobileApp``: ``launch()`` opens the client (and resumes a persisted
session), ``sign_in()`` attaches and starts the app's own :class:`SyncManager`, ``detach()``
signs out. Business writes are plain SQL on the same engine, exactly what an app that predates
oversync would do; the client's triggers capture them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from examples.mobile_flow.net import DeviceNetwork, TokenSource
from examples.mobile_flow.schema import DDL
from oversync_sa.client import ClientConfig
from oversync_sa.client.client import SyncClient
from oversync_sa.client.errors import (
    ClientClosedError,
    PendingPushReplayError,
    SyncOperationInProgressError,
)
from oversync_sa.client.results import AttachResult, AttachStatus, RemoteSyncOutcome

__all__ = ["Device", "Session", "SyncManager", "now_text"]

_log = logging.getLogger("examples.mobile_flow")

#: go-oversync's helpers retry 5 times, sleeping 500 ms x attempt, because the app's background
#: loops contend for the client's lock. We allow a few more: on a loaded 2-core CI machine one
#: background push can outlast Go's 7.5 s budget.
HELPER_ATTEMPTS: Final = 8
HELPER_DELAY: Final = 0.5
ATTACH_ATTEMPTS: Final = 8
OFFLINE_BANNER: Final = "Offline mode. Sign in to sync."
EXPIRED_BANNER: Final = "Session expired. Sign in."
#: Errors the app's own loops treat as "someone else is busy", not as failures.
_CONTENTION: Final = (SyncOperationInProgressError, PendingPushReplayError)


def now_text() -> str:
    """An RFC 3339 UTC timestamp, as the app stores ``created_at``/``updated_at``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Session:
    """The app's sign-in state; the token provider refuses to work without one."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens
        self.user_id: str | None = None

    @property
    def active(self) -> bool:
        return self.user_id is not None

    async def token(self) -> str:
        if self.user_id is None:
            raise RuntimeError("no active session")
        return await self._tokens.token(self.user_id)


@dataclass
class UIState:
    banner: str = ""
    pending_badge: int = 0


@dataclass
class SyncManager:
    """The app's own background sync (not ``SyncClient.start``), like the Go simulator's.

    Two loops tick every ``interval`` seconds; contention with scripted calls is ignored and
    auth failures only change the banner, as a real app would.
    """

    device: Device
    interval: float = 2.0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._loop(self.device.client.push_pending)),
                asyncio.create_task(self._loop(self.device.client.pull_to_stable)),
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, operation: Callable[[], Any]) -> None:
        device = self.device
        while True:
            await asyncio.sleep(self.interval)
            if not device.network.online or not device.session.active:
                continue
            try:
                await operation()
            except _CONTENTION:
                continue
            except ClientClosedError:
                return
            except Exception as exc:
                text = str(exc).lower()
                if any(word in text for word in ("401", "403", "unauthorized", "forbidden")):
                    device.ui.banner = EXPIRED_BANNER
                _log.debug("%s: background %s failed: %s", device.name, operation, exc)


class Device:
    """A simulated phone; build it with :meth:`create`."""

    def __init__(
        self,
        name: str,
        path: Path,
        engine: AsyncEngine,
        client: SyncClient,
        network: DeviceNetwork,
        session: Session,
        log: Callable[[str], None],
    ) -> None:
        self.name = name
        self.path = path
        self.engine = engine
        self.client = client
        self.network = network
        self.session = session
        self.ui = UIState()
        self.manager = SyncManager(self)
        self._log = log
        self.closed = False

    @classmethod
    async def create(
        cls,
        name: str,
        path: Path,
        *,
        server_url: str,
        tokens: TokenSource,
        config: ClientConfig,
        advertise_watch: bool | None = None,
        log: Callable[[str], None] = _log.debug,
    ) -> Device:
        """Create (or reopen) the SQLite file, its business tables and the client."""
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 10})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Go's DSN: WAL, FKs on, 5 s busy timeout; plus synchronous=NORMAL.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout = 5000")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.close()

        async with engine.begin() as conn:
            for statement in DDL:
                await conn.exec_driver_sql(statement)
        session = Session(tokens)
        network = DeviceNetwork(advertise_watch=advertise_watch)
        try:
            client = await SyncClient.create(
                engine, server_url, session.token, config, http_transport=network
            )
        except BaseException:
            await engine.dispose()
            raise
        return cls(name, path, engine, client, network, session, log)

    # -- lifecycle -------------------------------------------------------------------------

    async def launch(self) -> None:
        """App start: open the client; resume sync only for a persisted, matching session."""
        await self.client.open()
        if self.session.active and self.client.runtime.user_id == self.session.user_id:
            await self._connect(self.session.user_id or "")
            self.manager.start()
            self.ui.banner = "Syncing..."
        else:
            self.ui.banner = OFFLINE_BANNER
        self.ui.pending_badge = await self.pending_count()

    async def sign_in(self, user_id: str, *, background: bool = True) -> AttachResult:
        """Sign in, attach (retrying ``retry_later``) and start the app's sync loops."""
        self._log(f"{self.name}: sign in as {user_id}")
        self.session.user_id = user_id
        await self.client.open()
        result = await self._connect(user_id)
        if background:
            self.manager.start()
        self.ui.banner = "Syncing..."
        self.ui.pending_badge = await self.pending_count()
        return result

    async def _connect(self, user_id: str) -> AttachResult:
        for _ in range(ATTACH_ATTEMPTS):
            result = await self.client.attach(user_id)
            if result.status is AttachStatus.CONNECTED:
                return result
            await asyncio.sleep(result.retry_after if result.retry_after > 0 else 0.25)
        raise RuntimeError(f"attach did not connect after {ATTACH_ATTEMPTS} attempts")

    async def stop_sync(self) -> None:
        await self.manager.stop()

    async def detach(self) -> None:
        """Sign out: stop the loops, detach (refused while rows are unsynced), clear session."""
        await self.manager.stop()
        result = await self.client.detach()
        if result.outcome.value != "detached":
            raise RuntimeError(f"detach blocked by {result.pending_row_count} pending sync rows")
        self.session.user_id = None
        self.ui.banner = OFFLINE_BANNER
        self.ui.pending_badge = await self.pending_count()

    async def close(self) -> None:
        """Stop everything and release the database (idempotent)."""
        if self.closed:
            return
        self.closed = True
        await self.manager.stop()
        with contextlib.suppress(Exception):
            await self.client.close()
        await self.engine.dispose()

    # -- sync helpers (retrying like go-oversync's, because the app's loops contend) -------

    async def push_pending(self) -> None:
        for attempt in range(1, HELPER_ATTEMPTS + 1):
            try:
                await self.client.push_pending()
                break
            except Exception as exc:
                if attempt == HELPER_ATTEMPTS:
                    raise
                self._log(f"{self.name}: push attempt {attempt} failed: {exc!r}")
                await asyncio.sleep(HELPER_DELAY * attempt)
        self.ui.pending_badge = await self.pending_count()

    async def pull_to_stable(self) -> tuple[int, int]:
        """Pull; returns ``(checkpoint delta, checkpoint)`` (0 applied when paused)."""
        for attempt in range(1, HELPER_ATTEMPTS + 1):
            before = await self.last_seq()
            try:
                report = await self.client.pull_to_stable()
            except Exception as exc:
                if attempt == HELPER_ATTEMPTS:
                    raise
                self._log(f"{self.name}: pull attempt {attempt} failed: {exc!r}")
                await asyncio.sleep(HELPER_DELAY * attempt)
                continue
            after = await self.last_seq()
            applied = 0 if report.outcome is RemoteSyncOutcome.SKIPPED_PAUSED else after - before
            return max(applied, 0), after
        raise AssertionError("unreachable")

    async def rebuild(self) -> None:
        for attempt in range(1, HELPER_ATTEMPTS + 1):
            try:
                await self.client.rebuild()
                return
            except _CONTENTION:
                if attempt == HELPER_ATTEMPTS:
                    raise
                await asyncio.sleep(HELPER_DELAY * attempt)

    # -- local data ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self, *, defer_fks: bool = False) -> AsyncIterator[AsyncConnection]:
        """One app transaction; ``defer_fks`` checks FKs at COMMIT (cycles, child-first)."""
        async with self.engine.begin() as conn:
            if defer_fks:
                await conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
            yield conn

    async def execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        async with self.transaction() as conn:
            result = await conn.execute(sa.text(sql), params or {})
            return int(result.rowcount)

    async def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(sa.text(sql), params or {})

    async def rows(self, sql: str, params: dict[str, Any] | None = None) -> Sequence[Any]:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.text(sql), params or {})).all()

    async def create_user(
        self,
        name: str,
        email: str,
        user_id: str | None = None,
        conn: AsyncConnection | None = None,
        updated_at: str | None = None,
    ) -> str:
        user_id = user_id or str(uuid.uuid4())
        stamp = now_text()
        params = {"id": user_id, "name": name, "email": email, "c": stamp, "u": updated_at or stamp}
        sql = sa.text(
            "INSERT INTO users (id, name, email, created_at, updated_at) "
            "VALUES (:id, :name, :email, :c, :u)"
        )
        if conn is not None:
            await conn.execute(sql, params)
        else:
            async with self.transaction() as own:
                await own.execute(sql, params)
        return user_id

    async def create_post(
        self,
        title: str,
        content: str,
        author_id: str | None,
        post_id: str | None = None,
        conn: AsyncConnection | None = None,
    ) -> str:
        post_id = post_id or str(uuid.uuid4())
        stamp = now_text()
        params = {"id": post_id, "t": title, "c": content, "a": author_id, "s": stamp}
        sql = sa.text(
            "INSERT INTO posts (id, title, content, author_id, created_at, updated_at) "
            "VALUES (:id, :t, :c, :a, :s, :s)"
        )
        if conn is not None:
            await conn.execute(sql, params)
        else:
            async with self.transaction() as own:
                await own.execute(sql, params)
        return post_id

    async def update_user(
        self, user_id: str, name: str, email: str, updated_at: str | None = None
    ) -> None:
        changed = await self.execute(
            "UPDATE users SET name = :n, email = :e, updated_at = :u WHERE id = :id",
            {"n": name, "e": email, "u": updated_at or now_text(), "id": user_id},
        )
        if changed != 1:
            raise AssertionError(f"{self.name}: user {user_id} to update does not exist")

    async def update_post(self, post_id: str, title: str, content: str) -> None:
        await self.execute(
            "UPDATE posts SET title = :t, content = :c, updated_at = :u WHERE id = :id",
            {"t": title, "c": content, "u": now_text(), "id": post_id},
        )

    async def delete_user(self, user_id: str) -> None:
        await self.execute("DELETE FROM users WHERE id = :id", {"id": user_id})

    async def delete_post(self, post_id: str) -> None:
        await self.execute("DELETE FROM posts WHERE id = :id", {"id": post_id})

    # -- inspection ------------------------------------------------------------------------

    async def count(self, table: str) -> int:
        return int(await self.scalar(f"SELECT COUNT(*) FROM {table}"))

    async def has_user(self, user_id: str) -> bool:
        return bool(await self.scalar("SELECT COUNT(*) FROM users WHERE id = :id", {"id": user_id}))

    async def user_ids(self) -> set[str]:
        return {str(row[0]) for row in await self.rows("SELECT id FROM users")}

    async def pending_count(self) -> int:
        return await self.count("_sync_dirty_rows")

    async def last_seq(self) -> int:
        value = await self.scalar(
            "SELECT last_bundle_seq_seen FROM _sync_attachment_state WHERE singleton_key = 1"
        )
        return int(value or 0)

    async def push_recovery_counts(self) -> tuple[int, int, int]:
        """``(outbox rows, push stage rows, dirty rows)``."""
        return (
            await self.count("_sync_outbox_rows"),
            await self.count("_sync_push_stage"),
            await self.count("_sync_dirty_rows"),
        )
