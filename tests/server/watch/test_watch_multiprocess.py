"""Two server processes on one database: a commit through one wakes watchers of both (§7.4)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.server.watch._support import SSEReader, actor_headers, make_service, write_note

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def server_process(db_url: str) -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.server.watch._server_app", db_url, str(port), cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(30):
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"server process exited with {proc.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/test/ready")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def subscriber_count(url: str, user_id: str) -> int:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/test/watch-subscribers", params={"user_id": user_id})
    return int(response.json()["subscriber_count"])


async def test_commit_through_one_process_wakes_a_watcher_on_the_other(
    pg_url: str, pg_engine: AsyncEngine
) -> None:
    service = await make_service(pg_engine)
    await write_note(service, "alice")
    async with (
        server_process(pg_url) as server_a,
        server_process(pg_url) as server_b,
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "GET", f"{server_a}/sync/watch?after_bundle_seq=1", headers=actor_headers()
        ) as on_a,
        client.stream(
            "GET", f"{server_b}/sync/watch?after_bundle_seq=1", headers=actor_headers()
        ) as on_b,
    ):
        assert on_a.status_code == on_b.status_code == 200
        # Subscribers are process-local: each process counts only its own.
        assert await subscriber_count(server_a, "alice") == 1
        assert await subscriber_count(server_b, "alice") == 1
        response = await client.post(
            f"{server_b}/test/write", params={"user_id": "alice", "writer": "server-b"}
        )
        assert response.json() == {"bundle_seq": 2}
        expected = (
            b'event: bundle\ndata: {"bundle_seq":2,"source_id":"server-b",'
            b'"source_bundle_id":1}\n\n'
        )
        readers = [SSEReader(on_a), SSEReader(on_b)]
        for reader in readers:
            assert await reader.next_event() == expected
        # And a commit made outside both processes reaches both as well.
        await write_note(service, "alice", writer="third")
        for reader in readers:
            frame = await reader.next_event()
            assert frame.startswith(b'event: bundle\ndata: {"bundle_seq":3,"source_id":"third"')
