"""``python -m examples.litestar_server``: serve the reference server with uvicorn.

On SIGINT/SIGTERM the sync service starts draining at once (new sync requests get ``503
service_unavailable``, watch streams end) while uvicorn finishes the requests in progress; the
embedded PostgreSQL, if any, is stopped last so a restart resumes over the same data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Final

import uvicorn

from examples.litestar_server.app import ExampleServer, create_app
from examples.litestar_server.database import create_engine, open_database
from examples.litestar_server.settings import Settings, SettingsError

_log = logging.getLogger("examples.litestar_server")

#: Go's example gives in-flight requests 30 s on shutdown.
SHUTDOWN_GRACE_SECONDS: Final = 30
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class _DrainingServer(uvicorn.Server):
    """uvicorn, plus: a stop signal also starts the sync service's drain right away.

    uvicorn on its own only runs the app's shutdown after every connection has closed, and an
    open watch stream never closes by itself.
    """

    def __init__(self, config: uvicorn.Config, example: ExampleServer) -> None:
        super().__init__(config)
        self._example = example
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
            self._drain = loop.create_task(self._example.plugin.shutdown())


async def serve(settings: Settings) -> None:
    """Run until a stop signal; every resource is released in reverse order of acquisition."""
    async with open_database(settings) as url:
        engine = create_engine(url, settings)
        try:
            example = ExampleServer.create(engine, settings)
            config = uvicorn.Config(
                create_app(example),
                host=settings.host,
                port=settings.port,
                log_config=None,
                timeout_keep_alive=60,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            )
            _log.info("serving the sync API on http://%s:%d", settings.host, settings.port)
            await _DrainingServer(config, example).serve()
        finally:
            await engine.dispose()
    _log.info("server exited")


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        _log.error("invalid configuration: %s", exc)
        return 2
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
