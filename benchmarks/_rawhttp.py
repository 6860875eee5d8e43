"""A minimal HTTP/1.1 keep-alive client for load generators that share the server's CPUs.

The load benchmarks run the simulated devices in the same 2-CPU machine as the server and
PostgreSQL, so every millisecond the generator spends on a request is taken from the system
under test and shows up as server latency. httpx costs ~2 ms of CPU per request here (its
transport, pool and model layers); this client writes the request bytes and reads a
``Content-Length`` response off one asyncio stream, ~10x less. It speaks only what the
reference server answers (no chunked bodies, no redirects, no TLS) and fails loudly on
anything else, so it cannot silently measure something different.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import msgspec

__all__ = ["RawHTTPClient", "RawHTTPError", "RawResponse"]

_HEADER_LIMIT: Final = 64 * 1024
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


class RawHTTPError(Exception):
    """Transport failure or a response this client does not understand."""


class RawResponse:
    __slots__ = ("content", "status_code")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return _json_decode(self.content)


class RawHTTPClient:
    """One keep-alive connection; requests on it are sequential, like one device's."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"only http://host:port base URLs are supported, got {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._host_header = f"{self._host}:{self._port}".encode("ascii")
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(
        self, path: str, *, params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> RawResponse:
        if params:
            path = f"{path}?{urlencode(params)}"
        return await self.request("GET", path, None, headers)

    async def post(
        self, path: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> RawResponse:
        body = b"" if json is None else _json_encode(json)
        return await self.request("POST", path, body, headers, json is not None)

    async def request(
        self, method: str, path: str, body: bytes | None,
        headers: dict[str, str] | None = None, is_json: bool = False,
    ) -> RawResponse:
        try:
            return await asyncio.wait_for(
                self._exchange(method, path, body, headers, is_json), self._timeout
            )
        except RawHTTPError:
            await self.aclose()  # the stream position is unknown now
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError) as exc:
            await self.aclose()
            raise RawHTTPError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def _exchange(
        self, method: str, path: str, body: bytes | None,
        headers: dict[str, str] | None, is_json: bool,
    ) -> RawResponse:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(
                self._host, self._port, limit=_HEADER_LIMIT
            )
        reader, writer = self._reader, self._writer
        assert reader is not None
        head = [f"{method} {path} HTTP/1.1".encode("ascii"), b"Host: " + self._host_header]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}".encode("latin-1"))
        if body is not None:
            if is_json:
                head.append(b"Content-Type: application/json")
            head.append(b"Content-Length: " + str(len(body)).encode("ascii"))
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + (body or b""))
        await writer.drain()
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise RawHTTPError(f"malformed status line {lines[0]!r}")
        length: int | None = None
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding":
                raise RawHTTPError(f"unsupported transfer-encoding {value.strip()!r}")
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        content = await reader.readexactly(length) if length else b""
        if close:
            await self.aclose()
        return RawResponse(int(status_line[1]), content)

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
