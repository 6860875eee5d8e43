"""The KMP sample app's server (examples/samplesync_server) against go-oversync's sample.

The server runs in-process under uvicorn on a fresh database and is driven over real HTTP: the
real client syncs the sample schema between two devices of one user (and keeps another user's
data apart), and the non-sync routes give the Go sample's answers. One test starts it as
``python -m examples.samplesync_server`` to check its environment handling and clean exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy import select

from examples.litestar_server.database import create_engine
from examples.samplesync_server.app import SampleSyncServer, create_app
from examples.samplesync_server.models import Comment, Person, PersonAddress, SampleSyncBase
from examples.samplesync_server.settings import (
    DATA_DIR,
    DEFAULT_JWT_SECRET,
    SettingsError,
    settings_from_env,
)
from oversync_sa.client import SyncClient
from oversync_sa.client.results import AttachOutcome, AttachStatus, PushOutcome
from oversync_sa.testing import PostgresServer
from tests._live_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "samplesync-test-secret-long-enough-for-hs256"
SOURCE = "kmp-test-device"


@dataclass
class Served:
    base_url: str
    server: SampleSyncServer
    http: httpx.AsyncClient

    async def signin(self, user: str) -> str:
        resp = await self.http.post("/dummy-signin", json={"user": user, "password": "x"})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["token"])

    async def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.signin(user)}", "Oversync-Source-ID": SOURCE}

    def token_provider(self, user: str) -> Callable[[], Awaitable[str]]:
        """What the app does: sign in again whenever the client needs a token."""

        async def provide() -> str:
            return await self.signin(user)

        return provide


@pytest.fixture
async def served(pg_url: str) -> AsyncIterator[Served]:
    port = free_port()
    settings = settings_from_env(
        {"DATABASE_URL": pg_url, "JWT_SECRET": SECRET, "PORT": str(port), "HOST": "127.0.0.1"}
    )
    engine = create_engine(pg_url, settings)
    server = SampleSyncServer.create(engine, settings)
    uv = uvicorn.Server(
        uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(uv.serve())
    try:
        while not uv.started:
            assert not serving.done(), "server stopped during startup"
            await asyncio.sleep(0.05)
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            yield Served(base_url, server, http)
    finally:
        uv.should_exit = True
        await serving
        await engine.dispose()


async def _device(served: Served, path: Path, user: str) -> SyncClient:
    client = await SyncClient.create(
        path, served.base_url, served.token_provider(user), models=SampleSyncBase,
        schema="business",
    )
    await client.open()
    return client


async def _attach(client: SyncClient, user: str) -> Any:
    result = await client.attach(user)
    for _ in range(40):  # retry_later is a normal answer while another device initialises
        if result.status is not AttachStatus.RETRY_LATER:
            break
        await asyncio.sleep(max(result.retry_after, 0.05))
        result = await client.attach(user)
    assert result.status is AttachStatus.CONNECTED
    return result


# ------------------------------------------------------------------------------- sync


async def test_two_devices_sync_the_sample_schema_over_http(
    served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="examples.samplesync_server")
    phone = await _device(served, tmp_path / "phone.db", "alice")
    laptop = await _device(served, tmp_path / "laptop.db", "alice")
    other = await _device(served, tmp_path / "bob.db", "bob")
    try:
        assert (await _attach(phone, "alice")).outcome is AttachOutcome.STARTED_EMPTY
        person_id, address_id, comment_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        birthday = "1990-04-01"
        async with phone.session() as session:
            session.add(Person(
                id=person_id, first_name="Ada", last_name="Lovelace", email="ada@example.com",
                phone="+44 20", birth_date=birthday, score=97.5, is_active=True,
                ssn=123_456_789, notes="first",
            ))
            session.add(PersonAddress(
                id=address_id, person_id=person_id, address_type="home", street="1 St James",
                city="London", country="UK", is_primary=True,
            ))
            session.add(Comment(id=comment_id, person_id=person_id, comment="hi", tags="a,b"))
            report = await session.sync()
        assert report.push_outcome is PushOutcome.COMMITTED

        # The second device of the same user takes the server's state on attach.
        assert (await _attach(laptop, "alice")).outcome is AttachOutcome.USED_REMOTE_STATE
        async with laptop.session() as session:
            person = (await session.execute(select(Person))).scalar_one()
            address = (await session.execute(select(PersonAddress))).scalar_one()
            comment = (await session.execute(select(Comment))).scalar_one()
            assert (person.id, person.first_name, person.email) == (
                person_id, "Ada", "ada@example.com"
            )
            assert (person.birth_date, person.score, person.is_active, person.ssn) == (
                birthday, 97.5, True, 123_456_789
            )
            # Filled by the server defaults on the phone's SQLite, and carried as instants.
            assert person.created_at is not None
            assert person.created_at.tzinfo is not None
            assert (address.person_id, address.is_primary, address.state) == (
                person_id, True, None
            )
            assert (comment.comment, comment.tags) == ("hi", "a,b")

            # And back: the laptop edits and deletes, the phone pulls it.
            person.email, person.is_active = "ada@lovelace.dev", False
            await session.delete(comment)
            await session.sync()
        await phone.sync()
        async with phone.session() as session:
            person = (await session.execute(select(Person))).scalar_one()
            assert (person.email, person.is_active) == ("ada@lovelace.dev", False)
            assert (await session.execute(select(Comment))).scalars().all() == []

        # Another user starts empty, and the e-mail index is per user, not global.
        assert (await _attach(other, "bob")).outcome is AttachOutcome.STARTED_EMPTY
        async with other.session() as session:
            assert (await session.execute(select(Person))).scalars().all() == []
            session.add(Person(id=uuid.uuid4(), first_name="B", last_name="B",
                               email="ada@lovelace.dev"))
            assert (await session.sync()).push_outcome is PushOutcome.COMMITTED
    finally:
        for client in (phone, laptop, other):
            await client.close()

    async with served.server.engine.connect() as conn:
        rows = (await conn.execute(sa.text(
            "SELECT _sync_scope_id, email FROM business.person ORDER BY _sync_scope_id"
        ))).all()
    assert [tuple(r) for r in rows] == [("alice", "ada@lovelace.dev"), ("bob", "ada@lovelace.dev")]

    # The development log names the user of each push and pull, and logs push bodies.
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("examples.")]
    assert any(m.startswith("Pull summary user=alice status=200") for m in messages), messages
    assert any(m.startswith("Push session summary user=bob") for m in messages)
    assert any("path=/sync/push-sessions/" in m and "ada@example.com" in m for m in messages)


async def test_server_creates_the_go_sample_schema(served: Served) -> None:
    async with served.server.engine.connect() as conn:
        columns = (await conn.execute(sa.text(
            "SELECT column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns"
            " WHERE table_schema = 'business' AND table_name = 'person'"
            " ORDER BY ordinal_position"
        ))).all()
        indexes: dict[str, str] = {
            str(name): str(definition)
            for name, definition in await conn.execute(sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'business'"
            ))
        }
        fks = (await conn.execute(sa.text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE contype = 'f' AND connamespace = 'business'::regnamespace ORDER BY conname"
        ))).all()
    assert [tuple(c) for c in columns] == [
        ("_sync_scope_id", "text", "NO", None),
        ("id", "uuid", "NO", None),
        ("first_name", "text", "NO", None),
        ("last_name", "text", "NO", None),
        ("email", "text", "NO", None),
        ("phone", "text", "YES", None),
        ("birth_date", "text", "YES", None),
        ("created_at", "timestamp with time zone", "YES", "now()"),
        ("updated_at", "timestamp with time zone", "YES", "now()"),
        ("score", "double precision", "YES", None),
        ("is_active", "boolean", "NO", "true"),
        ("ssn", "bigint", "YES", None),
        ("notes", "text", "YES", None),
    ]

    def cols(name: str) -> str:
        return indexes[name].split(" USING btree ")[1]

    assert cols("person_pkey") == "(_sync_scope_id, id)"
    assert indexes["person_user_email_unique"].startswith("CREATE UNIQUE INDEX")
    assert cols("person_user_email_unique") == "(_sync_scope_id, email)"
    assert cols("idx_person_name") == "(_sync_scope_id, last_name, first_name)"
    assert cols("idx_address_person") == "(_sync_scope_id, person_id)"
    assert cols("idx_address_person_primary") == "(_sync_scope_id, person_id, is_primary)"
    assert cols("idx_comment_person") == "(_sync_scope_id, person_id)"
    deferred = (
        "FOREIGN KEY (_sync_scope_id, person_id) REFERENCES business.person(_sync_scope_id, id)"
        " DEFERRABLE INITIALLY DEFERRED"
    )
    assert [tuple(f) for f in fks] == [
        ("comment_person_id_fkey", deferred),
        ("person_address_person_id_fkey", deferred),
    ]

    health = await served.http.get("/syncx/health")
    assert health.status_code == 200
    assert health.json()["app_name"] == "samplesync-server"
    # Registered in the Go sample's order; listed sorted.
    assert health.json()["registered_tables"] == [
        "business.comment", "business.person", "business.person_address"
    ]
    status = await served.http.get("/syncx/status")
    assert status.status_code == 200


# ------------------------------------------------------------------------------ sign-in


async def test_dummy_signin_issues_a_180_second_token_for_any_user(served: Served) -> None:
    resp = await served.http.post("/dummy-signin", json={"user": "alice", "password": "wrong"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert (body["user"], body["expires_in"]) == ("alice", 180)
    claims = pyjwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["iss"] == "go-oversync-examples"
    assert claims["exp"] - claims["iat"] == 180
    # Go's decoder matches the member name case-insensitively; the password is optional.
    again = await served.http.post("/dummy-signin", content=b'{"USER":"bob"}')
    assert again.status_code == 200
    assert again.json()["user"] == "bob"

    caps = await served.http.get(
        "/sync/capabilities",
        headers={"Authorization": f"Bearer {body['token']}", "Oversync-Source-ID": SOURCE},
    )
    assert caps.status_code == 200, caps.text


_SIGNIN_ERRORS = [
    (b"", "invalid_request"),
    (b"{not json", "invalid_request"),
    (b'{"user": 5}', "invalid_request"),
    (b"{}", "user_required"),
    (b"null", "user_required"),
    (b'{"user": "", "password": "x"}', "user_required"),
]


async def test_dummy_signin_errors(served: Served) -> None:
    # One server for all cases: booting one per case would dominate the test's time.
    for body, code in _SIGNIN_ERRORS:
        resp = await served.http.post("/dummy-signin", content=body)
        assert resp.status_code == 400, body
        assert resp.headers["content-type"] == "application/json"
        assert resp.content == f'{{"error":"{code}"}}\n'.encode(), body


async def test_router_answers_and_cors(served: Served) -> None:
    wrong_method = await served.http.get("/dummy-signin")
    assert (wrong_method.status_code, wrong_method.text) == (405, "Method Not Allowed\n")
    assert wrong_method.headers["allow"] == "POST"
    missing = await served.http.get("/test/reset")  # the reference server's helpers are absent
    assert (missing.status_code, missing.text) == (404, "404 page not found\n")

    preflight = await served.http.options("/sync/pull")
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "Oversync-Source-ID" in preflight.headers["access-control-allow-headers"]
    assert preflight.headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS"


# --------------------------------------------------------------------------------- auth


def _token(key: str, **claims: Any) -> str:
    now = datetime.now(UTC)
    payload = {"sub": "alice", "iat": now, "nbf": now, "exp": now + timedelta(minutes=3)}
    return str(pyjwt.encode({**payload, **claims}, key, algorithm="HS256"))


async def test_sync_routes_refuse_bad_credentials_in_plain_text(served: Served) -> None:
    cases = [
        (None, "Authorization header required"),
        ("Basic YWxpY2U6eA==", "Invalid authorization header format"),
        ("Bearer a b", "Invalid authorization header format"),
        ("Bearer not-a-jwt", "Invalid token"),
        (f"Bearer {_token('some-other-secret-that-is-also-long-enough')}", "Invalid token"),
        (f"Bearer {_token(SECRET, exp=datetime.now(UTC) - timedelta(seconds=5))}",
         "Invalid token"),
        (f"Bearer {_token(SECRET, sub='  ')}", "Invalid token"),
    ]
    for authorization, text in cases:
        headers = {"Oversync-Source-ID": SOURCE}
        if authorization is not None:
            headers["Authorization"] = authorization
        for method, path in [("GET", "/sync/pull"), ("POST", "/sync/connect"),
                             ("GET", "/sync/capabilities"), ("GET", "/sync/watch"),
                             ("POST", "/sync/snapshot-sessions")]:
            resp = await served.http.request(method, path, headers=headers)
            assert (resp.status_code, resp.text) == (401, f"{text}\n"), (authorization, path)
            assert resp.headers["content-type"] == "text/plain; charset=utf-8"


async def test_authenticated_request_without_source_is_refused(served: Served) -> None:
    token = await served.signin("alice")
    resp = await served.http.get("/sync/pull", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"


async def test_push_and_pull_over_raw_http(served: Served) -> None:
    """The wire the KMP app speaks: connect, push a person, pull it back."""
    auth = await served.auth("carol")
    connect = await served.http.post(
        "/sync/connect", json={"has_local_pending_rows": False}, headers=auth
    )
    assert connect.json()["resolution"] == "initialize_empty"
    create = await served.http.post(
        "/sync/push-sessions", json={"source_bundle_id": 1, "planned_row_count": 1}, headers=auth
    )
    push_id = create.json()["push_id"]
    key = str(uuid.uuid4())
    row = {
        "schema": "business", "table": "person", "key": {"id": key}, "op": "INSERT",
        "base_row_version": 0,
        "payload": {"id": key, "first_name": "C", "last_name": "D", "email": "c@d.e"},
    }
    chunk = await served.http.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": [row]}, headers=auth,
    )
    assert chunk.status_code == 200, chunk.text
    commit = await served.http.post(f"/sync/push-sessions/{push_id}/commit", headers=auth)
    assert commit.status_code == 200, commit.text
    pulled = (await served.http.get("/sync/pull", headers=auth)).json()
    payload = pulled["bundles"][0]["rows"][0]["payload"]
    # The server defaults apply to what the client left out.
    assert (payload["email"], payload["is_active"]) == ("c@d.e", True)


# ----------------------------------------------------------------------------- settings


def test_settings_defaults_are_the_go_samples() -> None:
    settings = settings_from_env({})
    assert settings.jwt_secret == DEFAULT_JWT_SECRET == "dev-secret"
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert (settings.pool_min_conns, settings.pool_max_conns) == (2, 20)
    assert settings.database_url is None  # embedded PostgreSQL, database "samplesync"
    assert (settings.database_name, settings.data_dir) == ("samplesync", DATA_DIR)
    assert settings.business_schema == "business"
    assert settings.log_stage_timings is False


def test_settings_read_the_go_samples_variables() -> None:
    settings = settings_from_env({
        "DATABASE_URL": " postgres://u@h/db?sslmode=disable ", "JWT_SECRET": "s",
        "PORT": "9000", "OVERSYNC_LOG_STAGE_TIMINGS": "Yes",
        # The reference server's pool variables are not the sample's.
        "OVERSYNC_DB_POOL_MAX_CONNS": "3",
    })
    assert settings.database_url == "postgres://u@h/db?sslmode=disable"
    assert (settings.jwt_secret, settings.port, settings.log_stage_timings) == ("s", 9000, True)
    assert settings.pool_max_conns == 20
    for bad in ("http", "0", "70000"):
        with pytest.raises(SettingsError, match="PORT"):
            settings_from_env({"PORT": bad})


# ------------------------------------------------------------------------------ process


def test_runs_as_a_module_and_exits_cleanly(pg_server: PostgresServer, tmp_path: Path) -> None:
    url = pg_server.create_database()
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "DATABASE_URL": url, "PORT": str(port), "HOST": "127.0.0.1",
           "JWT_SECRET": SECRET}
    try:
        bad = subprocess.run(
            [sys.executable, "-m", "examples.samplesync_server"], cwd=REPO_ROOT,
            env={**env, "PORT": "eighty"}, capture_output=True, timeout=60,
        )
        assert bad.returncode == 2
        assert b"PORT must be an integer" in bad.stderr

        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "examples.samplesync_server"],
                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                try:
                    if httpx.get(f"{base}/syncx/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            signin = httpx.post(f"{base}/dummy-signin", json={"user": "dave"})
            token = signin.json()["token"]
            assert pyjwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "dave"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        assert code == 0, log.read_text()[-3000:]
        assert "server exited" in log.read_text()
    finally:
        pg_server.drop_database(url)
