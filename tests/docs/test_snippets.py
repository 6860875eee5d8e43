"""Every Python file under docs/snippets/ runs here, exactly as the pages include it."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from oversync_sa.litestar import issue_token
from oversync_sa.server import ServiceConfig, SyncService
from oversync_sa.testing import sqlalchemy_url

pytestmark = pytest.mark.postgres

SNIPPETS = Path(__file__).resolve().parents[2] / "docs" / "snippets"
_QUICKSTART_MODULES = ("notes_models", "notes_server", "notes_client")


@pytest.fixture
def quickstart(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The quickstart files importable by their own names, as in a user's project."""
    monkeypatch.syspath_prepend(str(SNIPPETS / "quickstart"))
    try:
        yield
    finally:
        for name in _QUICKSTART_MODULES:
            sys.modules.pop(name, None)


@pytest.fixture
def snippets(monkeypatch: pytest.MonkeyPatch, quickstart: None) -> None:
    monkeypatch.syspath_prepend(str(SNIPPETS))


def test_every_snippet_file_is_exercised() -> None:
    files = {p.relative_to(SNIPPETS).as_posix() for p in SNIPPETS.rglob("*.py")}
    assert files == {
        "quickstart/notes_models.py",
        "quickstart/notes_server.py",
        "quickstart/notes_client.py",
        "scope_write.py",
        "prune_job.py",
        "observability.py",
    }


async def test_quickstart_server_and_two_devices(
    pg_url: str, tmp_path: Path, quickstart: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import notes_client
    import notes_server

    monkeypatch.setenv("DATABASE_URL", sqlalchemy_url(pg_url))
    assert notes_server.app().debug is False  # the uvicorn factory builds the same app

    app = notes_server.create_app(sqlalchemy_url(pg_url))
    # The lifespan (tables, then bootstrap) on this loop: the engine's connections live here.
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            assert (await http.get("/syncx/health")).status_code == 200
        token = issue_token("alice", notes_server.JWT_SECRET)
        phone, laptop = str(tmp_path / "phone.db"), str(tmp_path / "laptop.db")
        first = await notes_client.add_note_and_sync(
            phone, "http://testserver", "alice", token, http_transport=transport
        )
        second = await notes_client.add_note_and_sync(
            laptop, "http://testserver", "alice", token, http_transport=transport
        )
    assert first == [f"written on {phone}"]
    assert second == sorted([f"written on {phone}", f"written on {laptop}"])


async def _service(engine: AsyncEngine) -> SyncService:
    import notes_models

    from oversync_sa.metadata import server_projection

    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE SCHEMA business"))
        await conn.run_sync(server_projection(notes_models.Base, schema="business").create_all)
    config = ServiceConfig.from_models(
        notes_models.Base, schema="business", retained_bundles_per_user=1
    )
    service = SyncService(engine, config)
    await service.bootstrap()
    return service


async def test_scope_write_and_prune_job(pg_engine: AsyncEngine, snippets: None) -> None:
    import prune_job
    import scope_write

    service = await _service(pg_engine)
    first = await scope_write.send_welcome_note(service, "alice")
    assert first.auto_initialized is True
    second = await scope_write.send_welcome_note(service, "alice")
    assert (first.bundle.bundle_seq, second.bundle.bundle_seq) == (1, 2)
    async with pg_engine.connect() as conn:
        titles = (await conn.execute(sa.text("SELECT title FROM business.notes"))).scalars()
        assert list(titles) == ["Welcome!", "Welcome!"]

    # A window of 1 was already applied by the second commit; a lower floor needs nothing.
    totals = await prune_job.nightly_prune(pg_engine, service.config)
    assert totals.bundles_deleted == 0
    async with pg_engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM sync.bundle_log")) == 1


async def test_observability_metrics_and_client_counters(
    pg_engine: AsyncEngine,
    tmp_path: Path,
    snippets: None,
) -> None:
    import notes_models
    import observability

    from oversync_sa.client import ClientConfig, SyncClient
    from oversync_sa.client.results import PushOutcome
    from oversync_sa.metadata import client_projection, server_projection

    async with pg_engine.begin() as conn:
        await conn.execute(sa.text("CREATE SCHEMA business"))
        await conn.run_sync(server_projection(notes_models.Base, schema="business").create_all)
    secret = "observability-secret-of-at-least-32-bytes"
    app = observability.create_observed_app(pg_engine, secret)
    device = str(tmp_path / "phone.db")
    local = create_async_engine(f"sqlite+aiosqlite:///{device}")
    async with local.begin() as conn:
        await conn.run_sync(client_projection(notes_models.Base).create_all)
    await local.dispose()
    # Our own handler: the app's lifespan configures logging and drops pytest's capture handler.
    collected = _Collect()
    observability.log.addHandler(collected)
    observability.log.setLevel(logging.INFO)
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        token = issue_token("alice", secret)
        client = await SyncClient.create(
            device, "http://testserver", lambda: token,
            ClientConfig.from_models(notes_models.Base, schema="business"),
            http_transport=transport,
        )
        try:
            await client.open()
            await client.attach("alice")
            async with client.session() as session:
                session.add(notes_models.Note(id=uuid.uuid4(), title="observed"))
                await session.commit()
            report = await observability.sync_and_report(client)
        finally:
            await client.close()
            observability.log.removeHandler(collected)
            observability.log.setLevel(logging.NOTSET)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            scrape = (await http.get("/metrics")).text
    assert report.push_outcome is PushOutcome.COMMITTED
    (record,) = collected.records
    assert record.getMessage() == (
        "synced: 1 pushes, 1 pulls, 0 rebuilds, 0 conflicts resolved, 0 changes queued"
    )
    assert "oversync_push_bundles_committed_total 1.0" in scrape
    assert 'oversync_stage_duration_seconds_count{operation="pull",stage="total"} 1.0' in scrape
    assert "oversync_retained_floor_lag_max_bundles 1.0" in scrape


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
