"""One reference-server process per fault-test module, over its own fresh PostgreSQL database.

The server, device and verification helpers are the client end-to-end suite's
(:mod:`tests.e2e.client._support`): fault tests are the same real client against the same real
server, with :mod:`oversync_sa.testing.faults` between them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from oversync_sa.testing import PostgresServer, sqlalchemy_url
from tests.e2e.client._support import Harness, ServerProcess


@pytest.fixture(scope="module")
def live_server(
    pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str]]:
    url = pg_server.create_database()
    server = ServerProcess(url, tmp_path_factory.mktemp("server") / "server.log")
    try:
        server.wait_ready()
        yield server, url
    finally:
        code = server.stop()
        pg_server.drop_database(url)
        # A server that crashed under injected faults would hide exactly the bugs we look for.
        assert code == 0, server.tail()


@pytest.fixture(scope="module")
async def harness_module(
    live_server: tuple[ServerProcess, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    server, url = live_server
    engine = create_async_engine(sqlalchemy_url(url), pool_size=4, max_overflow=4)
    harness = Harness(server, url, engine, tmp_path_factory.mktemp("devices"))
    try:
        yield harness
    finally:
        await harness.close()
        await engine.dispose()


@pytest.fixture
async def harness(harness_module: Harness, tmp_path: Path) -> AsyncIterator[Harness]:
    """The module's harness; devices created through it are closed after each test."""
    harness_module.tmp = tmp_path
    try:
        yield harness_module
    finally:
        for device in harness_module.devices:
            await device.close()
        harness_module.devices.clear()
        if harness_module.server.proc.poll() is not None:
            pytest.fail(f"server died during the test:\n{harness_module.server.tail()}")
