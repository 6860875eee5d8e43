"""One live reference server per property-test module (the examples share it).

Each Hypothesis example runs in its own event loop (``asyncio.run``), so everything bound to a
loop - engines, clients - is created per example; only the server process is shared, and
examples isolate themselves by fresh user ids (scopes).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oversync_sa.testing import PostgresServer
from tests.e2e.client._support import ServerProcess


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
        # Injected faults must never crash the server; a crash would hide server errors.
        assert code == 0, server.tail()
