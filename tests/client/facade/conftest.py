"""Fixtures shared by the facade tests: the in-memory server and one client on a fresh file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oversync_sa.client import SyncClient
from tests.client.facade.server import SyncServer, make_client


@pytest.fixture
def server() -> SyncServer:
    return SyncServer()


@pytest.fixture
async def client(tmp_path: Path, server: SyncServer) -> AsyncIterator[SyncClient]:
    client = await make_client(tmp_path / "c.db", server)
    try:
        yield client
    finally:
        await client.close()
        await client.runtime.engine.dispose()
