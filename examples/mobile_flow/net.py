"""The devices' network: demo sign-in tokens and an instrumented HTTP transport.

Every device talks to the server through its own :class:`DeviceNetwork`, an
``httpx.AsyncBaseTransport`` plugged into ``SyncClient.create(http_transport=...)``. It plays the
part of go-oversync's scenario proxy without a second HTTP hop:

* it counts requests per endpoint and rows moved, for assertions and the report;
* ``online = False`` makes every request fail like a phone in airplane mode;
* ``advertise_watch`` rewrites ``GET /sync/capabilities`` so a scenario can pretend the server
  does not support ``/sync/watch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

__all__ = ["DeviceNetwork", "TokenSource", "Traffic"]

_CHUNK_PATH: Final = re.compile(r"^/sync/push-sessions/[^/]+/chunks$")
_SNAPSHOT_CHUNK_PATH: Final = re.compile(r"^/sync/snapshot-sessions/[^/]+$")
_COMMITTED_ROWS_PATH: Final = re.compile(r"^/sync/committed-bundles/\d+/rows$")
#: Demo tokens live 300 s on the reference server; refresh well before that.
_TOKEN_REFRESH_MARGIN: Final = 60.0


@dataclass
class Traffic:
    """What one device sent and received."""

    requests: Counter[str] = field(default_factory=Counter)
    rows_uploaded: int = 0
    rows_downloaded: int = 0

    def add(self, other: Traffic) -> None:
        self.requests.update(other.requests)
        self.rows_uploaded += other.rows_uploaded
        self.rows_downloaded += other.rows_downloaded


def endpoint_name(method: str, path: str) -> str:
    """A stable label per protocol endpoint (ids and sequence numbers elided)."""
    if _CHUNK_PATH.match(path):
        return "push_chunk"
    if path.endswith("/commit"):
        return "push_commit"
    if path == "/sync/push-sessions":
        return "push_create"
    if path.startswith("/sync/push-sessions/"):
        return "push_delete"
    if _COMMITTED_ROWS_PATH.match(path):
        return "committed_rows"
    if path == "/sync/snapshot-sessions":
        return "snapshot_create"
    if _SNAPSHOT_CHUNK_PATH.match(path):
        return "snapshot_chunk" if method == "GET" else "snapshot_delete"
    return path.removeprefix("/sync/").replace("-", "_") or path


class DeviceNetwork(httpx.AsyncBaseTransport):
    """Counting, switchable transport for one device (see the module docstring)."""

    def __init__(self, *, advertise_watch: bool | None = None) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.online = True
        self.advertise_watch = advertise_watch
        self.traffic = Traffic()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.online:
            raise httpx.ConnectError("network unreachable (device is offline)", request=request)
        name = endpoint_name(request.method, request.url.path)
        self.traffic.requests[name] += 1
        if name == "push_chunk":
            with contextlib.suppress(httpx.RequestNotRead):  # streamed body: not counted
                self.traffic.rows_uploaded += _row_count(request.content, "rows")
        response = await self._inner.handle_async_request(request)
        if name not in ("pull", "snapshot_chunk", "capabilities") or response.status_code != 200:
            return response
        # Small JSON answers: buffer them to count rows (never the SSE watch stream).
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
        await response.aclose()
        headers = httpx.Headers(response.headers)
        if "content-encoding" not in headers:
            if name == "pull":
                self.traffic.rows_downloaded += _pull_rows(raw)
            elif name == "snapshot_chunk":
                self.traffic.rows_downloaded += _row_count(raw, "rows")
            elif self.advertise_watch is not None:
                raw = _rewrite_capabilities(raw, self.advertise_watch)
                headers["content-length"] = str(len(raw))
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=raw,
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _row_count(raw: bytes, member: str) -> int:
    body = _decode(raw)
    rows = body.get(member) if isinstance(body, dict) else None
    return len(rows) if isinstance(rows, list) else 0


def _pull_rows(raw: bytes) -> int:
    body = _decode(raw)
    bundles = body.get("bundles") if isinstance(body, dict) else None
    if not isinstance(bundles, list):
        return 0
    return sum(len(b.get("rows") or ()) for b in bundles if isinstance(b, dict))


def _rewrite_capabilities(raw: bytes, advertise: bool) -> bytes:
    body = _decode(raw)
    if not isinstance(body, dict):
        return raw
    features = body.get("features")
    body["features"] = {
        **(features if isinstance(features, dict) else {}),
        "bundle_change_watch": advertise,
    }
    return json.dumps(body).encode()


class TokenSource:
    """Bearer tokens per user id.

    With a JWT secret the tokens are minted locally like go-oversync's simulator (HS256, issuer
    ``go-oversync-examples``, 24 h); without one they come from the server's ``/dummy-signin``,
    which works against the Python and the Go reference server alike without sharing a secret.
    """

    def __init__(self, server_url: str, jwt_secret: str | None = None) -> None:
        self._server = server_url.rstrip("/")
        self._secret = jwt_secret
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = asyncio.Lock()

    async def token(self, user_id: str) -> str:
        async with self._lock:
            cached = self._cache.get(user_id)
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
            token, ttl = self._mint(user_id) if self._secret else await self._signin(user_id)
            self._cache[user_id] = (token, time.monotonic() + max(ttl - _TOKEN_REFRESH_MARGIN, 1))
            return token

    def _mint(self, user_id: str) -> tuple[str, float]:
        import jwt  # the server extra; only needed when a secret is given

        now = int(time.time())
        ttl = 24 * 3600
        claims = {
            "sub": user_id.strip(),
            "iss": "go-oversync-examples",
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
        }
        assert self._secret is not None
        return jwt.encode(claims, self._secret, algorithm="HS256"), float(ttl)

    async def _signin(self, user_id: str) -> tuple[str, float]:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(
                f"{self._server}/dummy-signin", json={"user": user_id, "password": "demo"}
            )
        if resp.status_code != 200:
            raise RuntimeError(
                f"/dummy-signin for {user_id} failed: {resp.status_code} {resp.text}"
            )
        body = resp.json()
        return str(body["token"]), float(body.get("expires_in", 300))
