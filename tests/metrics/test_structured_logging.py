"""Important server events are logged on stable names with machine-readable ``extra`` fields."""

from __future__ import annotations

import logging
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import HistoryPrunedError, PushConflictError
from oversync_sa.server import Actor
from oversync_sa.wire.models import (
    ConnectRequest,
    SnapshotSessionCreateRequest,
    SnapshotSourceReplacement,
    SourceReplacementReason,
)
from tests.metrics._support import observed_service, push, user_row

pytestmark = pytest.mark.postgres

ALICE = Actor("alice", "alice-phone")


def _extra(record: logging.LogRecord, *names: str) -> tuple[object, ...]:
    """The ``extra=`` fields ``names`` of ``record`` (a KeyError names a missing one)."""
    return tuple(record.__dict__[name] for name in names)


def _only(caplog: pytest.LogCaptureFixture, logger: str, message: str) -> logging.LogRecord:
    found = [r for r in caplog.records if r.name == logger and message in r.getMessage()]
    assert len(found) == 1, [r.getMessage() for r in caplog.records]
    return found[0]


async def test_push_commit_and_conflict_records_carry_their_fields(
    pg_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    service, _ = await observed_service(pg_engine)
    await service.connect(ALICE, ConnectRequest(has_local_pending_rows=False))
    key = uuid.uuid4()
    with caplog.at_level(logging.DEBUG, logger="oversync_sa.server"):
        committed = await push(service, ALICE, 1, [user_row(key, "ann")])
        with pytest.raises(PushConflictError):
            await push(service, ALICE, 2, [user_row(key, "again")])

    record = _only(caplog, "oversync_sa.server.push", "push commit")
    assert _extra(record, "user", "source_id", "bundle_seq", "source_bundle_id", "rows") == (
        "alice", "alice-phone", committed.bundle_seq, 1, 1
    )
    (push_id,) = _extra(record, "push_id")

    conflict = _only(caplog, "oversync_sa.server.push", "push conflict")
    assert conflict.levelno == logging.INFO
    assert _extra(conflict, "user", "source_id", "table", "key") == (
        "alice", "alice-phone", "business.users", str(key)
    )
    (conflict_push_id,) = _extra(conflict, "push_id")
    assert uuid.UUID(str(push_id)) != uuid.UUID(str(conflict_push_id))  # two sessions


async def test_history_pruned_snapshot_and_retirement_records(
    pg_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    service, _ = await observed_service(pg_engine)
    await service.connect(ALICE, ConnectRequest(has_local_pending_rows=False))
    await push(service, ALICE, 1, [user_row(uuid.uuid4(), "ann")])
    await push(service, ALICE, 2, [user_row(uuid.uuid4(), "bob")])
    async with pg_engine.begin() as conn:
        await conn.execute(sa.text(
            "UPDATE sync.user_state SET retained_bundle_floor = 1 WHERE user_id = 'alice'"
        ))
    rotation = SnapshotSourceReplacement(
        previous_source_id="alice-phone",
        new_source_id="alice-phone-2",
        reason=SourceReplacementReason.HISTORY_PRUNED,
    )
    with caplog.at_level(logging.INFO, logger="oversync_sa.server"):
        with pytest.raises(HistoryPrunedError):
            await service.pull(ALICE, after_bundle_seq=1)
        snapshot = await service.create_snapshot_session(
            ALICE, SnapshotSessionCreateRequest(source_replacement=rotation)
        )

    pruned = _only(caplog, "oversync_sa.server.service", "history_pruned")
    assert _extra(pruned, "user", "source_id", "operation") == ("alice", "alice-phone", "pull")
    created = _only(caplog, "oversync_sa.server.snapshot", "snapshot")
    assert _extra(created, "user", "snapshot_id", "bundle_seq", "rows") == (
        "alice", snapshot.snapshot_id, 2, 2
    )
    retired = _only(caplog, "oversync_sa.server.sources", "retired")
    assert _extra(retired, "user", "source_id", "replaced_by_source_id", "reason") == (
        "alice", "alice-phone", "alice-phone-2", "history_pruned"
    )
