"""``python -m examples.litestar_server``: serve the reference server with uvicorn.

On SIGINT/SIGTERM the sync service starts draining at once (new sync requests get ``503
service_unavailable``, watch streams end) while uvicorn finishes the requests in progress; the
embedded PostgreSQL, if any, is stopped last so a restart resumes over the same data.

``--workers N`` (N > 1) runs N such servers behind one port over one database; see
:mod:`.workers`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

import uvicorn

from examples.litestar_server.app import ExampleServer, create_app
from examples.litestar_server.database import create_engine, open_database
from examples.litestar_server.serving import SHUTDOWN_GRACE_SECONDS, DrainingServer
from examples.litestar_server.settings import Settings, SettingsError
from examples.litestar_server.workers import inherited_socket, supervise

_log = logging.getLogger("examples.litestar_server")

async def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Run until a stop signal; every resource is released in reverse order of acquisition.

    ``sock`` is a listening socket inherited from a ``--workers`` parent (then ``HOST``/``PORT``
    were the parent's to bind).
    """
    async with open_database(settings) as url:
        engine = create_engine(url, settings)
        try:
            example = ExampleServer.create(engine, settings)
            config = uvicorn.Config(
                create_app(example),
                host=settings.host,
                port=settings.port,
                log_config=None,
                access_log=settings.access_log,
                timeout_keep_alive=60,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            )
            _log.info("serving the sync API on http://%s:%d", settings.host, settings.port)
            await DrainingServer(config, example.plugin).serve(
                sockets=[sock] if sock is not None else None
            )
        finally:
            await engine.dispose()
    _log.info("server exited")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.litestar_server")
    parser.add_argument(
        "--workers", type=int, default=1,
        help="server processes behind the one port, over one database (default 1)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        _log.error("invalid configuration: %s", exc)
        return 2
    if args.workers > 1:
        return asyncio.run(supervise(settings, args.workers))
    asyncio.run(serve(settings, inherited_socket()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
