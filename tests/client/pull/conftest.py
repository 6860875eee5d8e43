from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oversync_sa.client.client import SyncClient
from tests.client.lifecycle.fakes import FakeServer, make_client


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def client(tmp_path: Path, server: FakeServer) -> AsyncIterator[SyncClient]:
    client = await make_client(tmp_path / "c.db", server)
    try:
        yield client
    finally:
        await client.close()
        await client.runtime.engine.dispose()
