"""``SyncService``: the server facade (construction, bootstrap, lifecycle, runtime info).

Protocol operations live in their own modules and use :meth:`SyncService.operation` to
register as in-flight (§7.6), so :meth:`SyncService.close` can drain them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import OversyncError, ServiceUnavailableError
from oversync_sa.server.bootstrap import run_bootstrap
from oversync_sa.server.config import ServiceConfig
from oversync_sa.server.runtime_info import SyncRuntime

__all__ = ["ServiceClosedError", "ServiceState", "SyncService"]

_log = logging.getLogger("oversync_sa.server.service")

SHUTTING_DOWN_MESSAGE = "Sync service is shutting down"


class ServiceState(enum.Enum):
    RUNNING = "running"
    SHUTTING_DOWN = "shutting_down"
    CLOSED = "closed"


class ServiceClosedError(OversyncError):
    """An operation was attempted after :meth:`SyncService.close` finished (→ endpoint 500)."""


class SyncService:
    """The authoritative sync server over one SQLAlchemy ``AsyncEngine``.

    Construction touches no database (§2.1); call :meth:`bootstrap` before serving. The engine
    is borrowed: :meth:`close` drains operations but does not dispose it.
    """

    def __init__(self, engine: AsyncEngine, config: ServiceConfig) -> None:
        self.engine = engine
        self.config = config
        self._runtime: SyncRuntime | None = None
        self._state = ServiceState.RUNNING
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()

    @property
    def state(self) -> ServiceState:
        return self._state

    @property
    def in_flight(self) -> int:
        """Number of operations currently registered (diagnostics and tests)."""
        return self._in_flight

    @property
    def runtime(self) -> SyncRuntime:
        """Registered-table topology; available after a successful :meth:`bootstrap`."""
        if self._runtime is None:
            raise OversyncError("SyncService.bootstrap() has not completed")
        return self._runtime

    @property
    def is_bootstrapped(self) -> bool:
        return self._runtime is not None

    async def bootstrap(self) -> SyncRuntime:
        """Validate the registered tables, create/verify ``sync.*`` and install triggers.

        Idempotent; safe to run concurrently from several processes.
        """
        self._runtime = await run_bootstrap(self.engine, self.config)
        return self._runtime

    @asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        """Register one in-flight operation; rejects new work once shutdown began."""
        if self._state is ServiceState.SHUTTING_DOWN:
            raise ServiceUnavailableError(SHUTTING_DOWN_MESSAGE)
        if self._state is ServiceState.CLOSED:
            raise ServiceClosedError("sync service is closed")
        self._in_flight += 1
        self._drained.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.set()

    async def close(self) -> None:
        """Stop accepting operations and wait for in-flight ones (§7.6); idempotent.

        Bound the wait with ``asyncio.timeout``; if it expires the service stays
        ``shutting_down`` (new work keeps getting 503) and the caller may close again.
        """
        if self._state is ServiceState.CLOSED:
            return
        self._state = ServiceState.SHUTTING_DOWN
        await self._drained.wait()
        self._state = ServiceState.CLOSED
        _log.info("sync service closed")
