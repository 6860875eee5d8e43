"""A standalone watch server for the multi-process test: ``python -m ... <db_url> <port>``.

Each process has its own engine, service, hub and listener, like one replica of a deployment.
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from sqlalchemy.ext.asyncio import create_async_engine

from oversync_sa.server.watch import bundle_change_watch
from oversync_sa.testing import sqlalchemy_url
from tests.server.watch._support import build_app, make_service


async def main(db_url: str, port: int) -> None:
    engine = create_async_engine(sqlalchemy_url(db_url), pool_size=3)
    service = await make_service(engine)
    watch = bundle_change_watch(service)
    await watch.start()
    config = uvicorn.Config(
        build_app(service, test_routes=True),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await watch.close()
        await service.close()
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
