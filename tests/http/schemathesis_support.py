"""The contract as Schemathesis sees it, and the live app it is run against.

The contract (``docs/api/two_way_sync.yaml``, the repo copy of the OpenAPI wire truth) is loaded
unchanged except for OpenAPI ``links`` added here, in memory: the contract declares none, and
without them Schemathesis cannot chain ``create push session -> chunks -> commit -> committed
rows`` or ``create snapshot -> chunk -> delete`` with real ids.

The app is the library as a host mounts it (``OversyncPlugin`` with JWT auth) over its own
PostgreSQL database. Schemathesis drives ASGI apps from an event loop of its own (a portal
thread), so the engine is created here without connecting and first used there, by the app's
lifespan; the same lifespan disposes of it.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
import yaml
from litestar import Litestar
from sqlalchemy.ext.asyncio import create_async_engine

from examples.business_models import REGISTER_ORDER, BusinessBase
from oversync_sa.litestar import JWTConfig, issue_token
from oversync_sa.litestar.plugin import OversyncPlugin
from oversync_sa.metadata import server_projection
from oversync_sa.server import BundleChangeWatchConfig, RegisteredTable, ServiceConfig, SyncService
from oversync_sa.testing import PostgresServer, sqlalchemy_url

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
#: The repo's copy of the contract: a clone of the repo has it, ``../shared`` it may not have.
CONTRACT_PATH: Final = REPO_ROOT / "docs" / "api" / "two_way_sync.yaml"

SECRET: Final = "schemathesis-secret-of-at-least-32-bytes"
USER: Final = "fuzz-user"
SOURCE: Final = "fuzz-device"
#: A row the seed commits: pushing an INSERT of it again is a ``push_conflict``.
SEEDED_KEY: Final = "6f1c2a3e-8d4b-4c5a-9e7f-0a1b2c3d4e5f"

_PUSH_CREATE: Final = "#/paths/~1sync~1push-sessions/post"
_PUSH_CHUNKS: Final = "#/paths/~1sync~1push-sessions~1{push_id}~1chunks/post"
_PUSH_COMMIT: Final = "#/paths/~1sync~1push-sessions~1{push_id}~1commit/post"
_PUSH_DELETE: Final = "#/paths/~1sync~1push-sessions~1{push_id}/delete"
_COMMITTED_ROWS: Final = "#/paths/~1sync~1committed-bundles~1{bundle_seq}~1rows/get"
_SNAPSHOT_GET: Final = "#/paths/~1sync~1snapshot-sessions~1{snapshot_id}/get"
_SNAPSHOT_DELETE: Final = "#/paths/~1sync~1snapshot-sessions~1{snapshot_id}/delete"


def load_contract() -> dict[str, Any]:
    """The contract document exactly as the repo ships it."""
    with CONTRACT_PATH.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    assert isinstance(document, dict)
    return document


def _link(ref: str, **parameters: str) -> dict[str, Any]:
    return {"operationRef": ref, "parameters": parameters}


def contract_with_links() -> dict[str, Any]:
    """The contract plus the links between the operations that hand each other ids."""
    document = copy.deepcopy(load_contract())
    paths = document["paths"]

    def add(path: str, method: str, status: str, links: dict[str, Any]) -> None:
        response = paths[path][method]["responses"][status]
        response.setdefault("links", {}).update(links)

    push_id = "$response.body#/push_id"
    # Commit and delete hang off the chunk upload only: a session is committed after its rows,
    # and every link from create would dilute the steps that reach a successful commit.
    add(
        "/sync/push-sessions",
        "post",
        "200",
        {
            "UploadChunk": _link(_PUSH_CHUNKS, push_id=push_id),
            # An ``already_committed`` answer names its bundle.
            "CommittedRows": _link(_COMMITTED_ROWS, bundle_seq="$response.body#/bundle_seq"),
        },
    )
    add(
        "/sync/push-sessions/{push_id}/chunks",
        "post",
        "200",
        {
            # No link to a further chunk: the valid sessions above plan one row, so a second
            # chunk is only an error path (the fuzz covers it), and each extra link makes a
            # successful commit rarer (it was reached once in ~600 stateful calls).
            "Commit": _link(_PUSH_COMMIT, push_id=push_id),
            "Delete": _link(_PUSH_DELETE, push_id=push_id),
        },
    )
    add(
        "/sync/push-sessions/{push_id}/commit",
        "post",
        "200",
        {
            "CommittedRows": _link(_COMMITTED_ROWS, bundle_seq="$response.body#/bundle_seq"),
        },
    )
    snapshot_id = "$response.body#/snapshot_id"
    add(
        "/sync/snapshot-sessions",
        "post",
        "200",
        {
            "Chunk": _link(_SNAPSHOT_GET, snapshot_id=snapshot_id),
            "Delete": _link(_SNAPSHOT_DELETE, snapshot_id=snapshot_id),
        },
    )
    add(
        "/sync/snapshot-sessions/{snapshot_id}",
        "get",
        "200",
        {
            "Delete": _link(_SNAPSHOT_DELETE, snapshot_id=snapshot_id),
        },
    )
    return document


def auth_headers(user: str = USER, source: str = SOURCE) -> dict[str, str]:
    """A valid token for ``user`` and the source header."""
    return {
        "Authorization": f"Bearer {issue_token(user, SECRET, ttl_seconds=3600)}",
        "Oversync-Source-ID": source,
    }


def fresh_source() -> str:
    """A source the server has never seen: its next ``source_bundle_id`` is 1 (SERVER.md §5.1)."""
    return f"fuzz-{uuid.uuid4()}"


def user_row(key: str, name: str = "Ada") -> dict[str, Any]:
    """A valid ``business.users`` INSERT row."""
    return {
        "schema": "business",
        "table": "users",
        "key": {"id": key},
        "op": "INSERT",
        "base_row_version": 0,
        "payload": {"id": key, "name": name, "email": f"{name.lower()}@example.com"},
    }


def build_app(database_url: str) -> Litestar:
    """The library as a host mounts it (plugin + JWT), over ``database_url``.

    Schemathesis ends an ASGI app's lifespan after every test item, and a closed service stays
    closed (SERVER.md §7.6), so each test item gets an app of its own over the shared database.
    """
    engine = create_async_engine(sqlalchemy_url(database_url), pool_size=5, max_overflow=5)
    tables = tuple(RegisteredTable("business", t, "id") for t in REGISTER_ORDER)
    service = SyncService(
        engine,
        ServiceConfig(
            registered_tables=tables,
            bundle_change_watch=BundleChangeWatchConfig(enabled=True),
        ),
    )

    @asynccontextmanager
    async def business_schema(_: Litestar) -> AsyncIterator[None]:
        # Entered before the plugin's lifespan (which bootstraps) and left after it.
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS business"))
            await conn.run_sync(server_projection(BusinessBase).create_all)
        try:
            yield
        finally:
            await engine.dispose()

    return Litestar(
        plugins=[OversyncPlugin(service, jwt=JWTConfig(key=SECRET))],
        lifespan=[business_schema],
    )


def _seed(app: Litestar) -> None:
    """An initialized scope with one committed bundle, so reads have something to return."""
    from schemathesis.python import asgi

    with asgi.get_client(app) as client:
        headers = auth_headers()
        connect = client.post(
            "/sync/connect", json={"has_local_pending_rows": False}, headers=headers
        )
        assert connect.status_code == 200, connect.text
        create = client.post(
            "/sync/push-sessions",
            json={"source_bundle_id": 1, "planned_row_count": 2},
            headers=headers,
        )
        assert create.status_code == 200, create.text
        push_id = create.json()["push_id"]
        rows = [user_row(SEEDED_KEY), user_row(str(uuid.uuid4()), "Bob")]
        chunk = client.post(
            f"/sync/push-sessions/{push_id}/chunks",
            json={"start_row_ordinal": 0, "rows": rows},
            headers=headers,
        )
        assert chunk.status_code == 200, chunk.text
        commit = client.post(f"/sync/push-sessions/{push_id}/commit", headers=headers)
        assert commit.status_code == 200, commit.text


@contextmanager
def seeded_database(server: PostgresServer) -> Iterator[str]:
    """A fresh database with the business schema, the sync layout and :func:`_seed`'s data."""
    from schemathesis.python import asgi

    database_url = server.create_database()
    try:
        try:
            _seed(build_app(database_url))
        finally:
            asgi.shutdown_lifespans()
        yield database_url
    finally:
        server.drop_database(database_url)
