"""Wrong methods on ``/sync/*``: the answers, and whether they come before authentication.

Go (SERVER.md §8, §10.3): a method no route pattern has is the router's ``405``, before any
middleware; ``HEAD`` is matched by every ``GET`` pattern, so it goes through auth (``401``)
and the actor check (``400``) before the handler's own JSON ``405 method_not_allowed``. An
unauthenticated ``HEAD`` therefore learns nothing about a route that a ``GET`` would not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from oversync_sa.litestar import issue_token
from oversync_sa.server import ServiceConfig, SyncService
from tests._live_server import ServerProcess
from tests.http.http_support import SOURCE, app_client, headers, make_app

Client = httpx.AsyncClient

GET_ROUTES: Final = [
    "/sync/pull",
    "/sync/watch",
    "/sync/committed-bundles/1/rows",
    "/sync/snapshot-sessions/5a0f9e56-7d0c-4a55-9b8e-4d54a3c1e0b1",
    "/sync/capabilities",
]
POST_OR_DELETE_ONLY: Final = [
    ("/sync/connect", "POST"),
    ("/sync/push-sessions", "POST"),
    ("/sync/push-sessions/x/commit", "POST"),
    ("/sync/push-sessions/x", "DELETE"),
]


@pytest.fixture
async def offline() -> AsyncIterator[Client]:
    """The library app over a service that is never bootstrapped: nothing here needs a DB."""
    engine = create_async_engine("postgresql+asyncpg://unused@127.0.0.1:1/none")
    async with app_client(make_app(SyncService(engine, ServiceConfig()))) as client:
        yield client


@pytest.mark.parametrize("path", GET_ROUTES)
async def test_head_on_a_get_route_authenticates_first(offline: Client, path: str) -> None:
    anonymous = await offline.head(path)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/json"
    bad_token = await offline.head(path, headers={"Authorization": "Bearer x.y.z"})
    assert bad_token.status_code == 401
    no_source = await offline.head(path, headers={"Authorization": headers()["Authorization"]})
    # Capabilities needs no actor, as for its GET; every other route wants the source header.
    assert no_source.status_code == (405 if path.endswith("capabilities") else 400)
    authenticated = await offline.head(path, headers=headers())
    assert authenticated.status_code == 405
    assert authenticated.headers["content-type"] == "application/json"
    assert authenticated.content == b""


@pytest.mark.parametrize("method", ["PUT", "PATCH", "POST"])
@pytest.mark.parametrize("path", ["/sync/pull", "/sync/capabilities"])
async def test_other_methods_are_the_routers_405_before_auth(
    offline: Client, method: str, path: str
) -> None:
    resp = await offline.request(method, path)
    assert resp.status_code == 405
    assert resp.json() == {"error": "method_not_allowed", "message": "Only GET method is allowed"}
    assert "GET" in resp.headers["allow"]


@pytest.mark.parametrize(("path", "allowed"), POST_OR_DELETE_ONLY)
async def test_head_on_a_route_without_get_is_the_routers_405(
    offline: Client, path: str, allowed: str
) -> None:
    resp = await offline.head(path)
    assert resp.status_code == 405
    assert allowed in resp.headers["allow"]


async def test_served_document_has_no_head_operations(offline: Client) -> None:
    document = (await offline.get("/schema/openapi.json")).json()
    assert all("head" not in item for item in document["paths"].values())


# ------------------------------------------------------------- the reference server, real HTTP

JWT_SECRET: Final = "method-order-secret-of-at-least-32-bytes"


@pytest.fixture
def reference_server(pg_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(pg_url, tmp_path / "server.log", jwt_secret=JWT_SECRET)
    try:
        server.wait_ready()
        yield server
    finally:
        assert server.stop() == 0, server.tail()


def test_reference_server_head_is_401_then_405_over_http(
    reference_server: ServerProcess,
) -> None:
    """As Go's example: plain-text 401 from its JWT layer, JSON 405 from the handler, no body
    on any ``HEAD`` answer, and the router's plain-text 405 for other methods."""
    url = f"{reference_server.base_url}/sync/pull"
    with httpx.Client(timeout=10) as http:
        anonymous = http.head(url)
        assert anonymous.status_code == 401
        assert anonymous.content == b""
        token = issue_token("alice", JWT_SECRET)
        auth = {"Authorization": f"Bearer {token}", "Oversync-Source-ID": SOURCE}
        authenticated = http.head(url, headers=auth)
        assert authenticated.status_code == 405
        assert authenticated.headers["content-type"] == "application/json"
        assert authenticated.content == b""
        put = http.put(url)
        assert put.status_code == 405
        assert put.content == b"Method Not Allowed\n"
        assert put.headers["allow"] == "GET, HEAD"

