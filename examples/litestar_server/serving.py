"""uvicorn with an immediate drain on SIGINT/SIGTERM, shared by the example servers.

On a stop signal the sync service starts draining at once (new sync requests get ``503
service_unavailable``, watch streams end) while uvicorn finishes the requests in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Final

import uvicorn

from oversync_sa.litestar.plugin import OversyncPlugin

__all__ = ["SHUTDOWN_GRACE_SECONDS", "DrainingServer"]

#: Go's example gives in-flight requests 30 s on shutdown.
SHUTDOWN_GRACE_SECONDS: Final = 30
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class DrainingServer(uvicorn.Server):
    """uvicorn, plus: a stop signal also starts the sync service's drain right away.

    uvicorn on its own only runs the app's shutdown after every connection has closed, and an
    open watch stream never closes by itself.
    """

    def __init__(self, config: uvicorn.Config, plugin: OversyncPlugin) -> None:
        super().__init__(config)
        self._plugin = plugin
        self._drain: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Route SIGINT/SIGTERM to :meth:`handle_exit` while serving.

        uvicorn's own version re-raises the signal after a graceful stop, which would turn a
        clean shutdown into ``KeyboardInterrupt`` before the engine and database are closed.
        """
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._drain is None:
            loop = asyncio.get_running_loop()
            self._drain = loop.create_task(self._plugin.shutdown())
