"""The load generator's minimal HTTP client: what it understands, and refusing the rest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from benchmarks._rawhttp import RawHTTPClient, RawHTTPError


@asynccontextmanager
async def _server(answer: Callable[[bytes], bytes]) -> AsyncIterator[str]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                seen.append(request)
                writer.write(answer(request))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


def _json_reply(request: bytes) -> bytes:
    body = b'{"echo": %d}' % len(request)
    return b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def test_requests_share_one_connection_and_decode_json() -> None:
    async with _server(_json_reply) as url:
        client = RawHTTPClient(url)
        first = await client.post("/a", json={"k": [1, 2]}, headers={"X-Test": "1"})
        second = await client.get("/b", params={"after": "7"})
        await client.aclose()
    assert first.status_code == second.status_code == 201
    assert isinstance(first.json()["echo"], int)
    assert second.text.startswith('{"echo"')


async def test_chunked_responses_are_refused_not_misread() -> None:
    def chunked(_: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"

    async with _server(chunked) as url:
        client = RawHTTPClient(url)
        with pytest.raises(RawHTTPError, match="unsupported transfer-encoding"):
            await client.get("/x")


async def test_a_dropped_connection_is_a_transport_error() -> None:
    async with _server(lambda _: b"HTTP/1.1 200 OK\r\nContent-Le") as url:
        client = RawHTTPClient(url, timeout=2.0)
        with pytest.raises(RawHTTPError):
            await client.get("/x")


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError, match="only http://host:port"):
        RawHTTPClient("https://example.com")
