"""``python -m examples.samplesync_server``: serve the sample server with uvicorn.

On SIGINT/SIGTERM the sync service starts draining at once (new sync requests get ``503
service_unavailable``, watch streams end) while uvicorn finishes the requests in progress; the
embedded PostgreSQL, if any, is stopped last so a restart resumes over the same data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import uvicorn
from litestar import Litestar

from examples.litestar_server.database import create_engine, open_database
from examples.litestar_server.serving import SHUTDOWN_GRACE_SECONDS, DrainingServer
from examples.samplesync_server.app import SampleSyncServer, create_app
from examples.samplesync_server.settings import Settings, SettingsError, settings_from_env

_log = logging.getLogger("examples.samplesync_server")

def _log_endpoints(app: Litestar) -> None:
    """List the served routes at startup, as the Go sample does for its app developers."""
    for route in sorted(app.routes, key=lambda r: r.path):
        methods = sorted(set(getattr(route, "methods", ())) - {"OPTIONS", "HEAD"})
        if route.path.startswith("/schema") or not methods:
            continue  # OpenAPI pages: not part of the sample's surface.
        _log.info("  %-6s %s", ",".join(methods), route.path)
    _log.info("sync source: send Oversync-Source-ID on authenticated /sync/* requests")


async def serve(settings: Settings) -> None:
    """Run until a stop signal; every resource is released in reverse order of acquisition."""
    async with open_database(settings) as url:
        engine = create_engine(url, settings)
        try:
            server = SampleSyncServer.create(engine, settings)
            app = create_app(server)
            config = uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                log_config=None,
                timeout_keep_alive=60,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            )
            _log.info("samplesync server listening on http://%s:%d", settings.host, settings.port)
            _log_endpoints(app)
            await DrainingServer(config, server.plugin).serve()
        finally:
            await engine.dispose()
    _log.info("server exited")


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from_env(os.environ)
    except SettingsError as exc:
        _log.error("invalid configuration: %s", exc)
        return 2
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
