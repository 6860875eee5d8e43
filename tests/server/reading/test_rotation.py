"""Snapshot ``source_replacement`` (SERVER.md §7.2): rotate, repeat, and every refusal."""

from __future__ import annotations

from typing import cast

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.errors import (
    SnapshotSessionCreateFailedError,
    SnapshotSessionInvalidError,
    SourceReplacementInvalidError,
    SourceRetiredError,
)
from oversync_sa.server import SyncService
from oversync_sa.server.snapshot import create_snapshot_session
from oversync_sa.wire.models import (
    SnapshotSessionCreateRequest,
    SnapshotSourceReplacement,
    SourceReplacementReason,
)
from tests.server.reading._support import Actor, execute, make_service, note_inserts, write

OLD = Actor("alice", "old")


def _request(
    previous: str, new: str, reason: str = "history_pruned"
) -> SnapshotSessionCreateRequest:
    # Struct construction does not validate, so a bogus reason reaches the service as is.
    return SnapshotSessionCreateRequest(
        source_replacement=SnapshotSourceReplacement(
            previous_source_id=previous,
            new_source_id=new,
            reason=cast(SourceReplacementReason, reason),
        )
    )


async def _states(service: SyncService) -> dict[str, tuple[str, int, str, str]]:
    async with service.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT source_id, state, max_committed_source_bundle_id, replaced_by_source_id, "
                "retirement_reason FROM sync.source_state"
            )
        )
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


@pytest.fixture
async def scope(service: SyncService) -> SyncService:
    await write(service, "alice", note_inserts("n", 1), writer="old")
    return service


async def test_rotation_retires_previous_and_reserves_new_idempotently(
    scope: SyncService,
) -> None:
    request = _request(" old ", " new ", "source_retired")
    session = await create_snapshot_session(scope, OLD, request)
    assert session.row_count == 1
    expected = {
        "old": ("retired", 1, "new", "source_retired"),
        "new": ("reserved", 0, "", ""),
    }
    assert await _states(scope) == expected
    # Same rotation again (lost response): accepted, nothing changes.
    await create_snapshot_session(scope, OLD, _request("old", "new"))
    assert await _states(scope) == expected
    # Keep-source snapshots stay available to a retired source.
    await create_snapshot_session(scope, OLD)


async def test_rotation_of_a_never_seen_source(scope: SyncService) -> None:
    await create_snapshot_session(scope, Actor("alice", "fresh"), _request("fresh", "next"))
    states = await _states(scope)
    assert states["fresh"] == ("retired", 0, "next", "history_pruned")
    assert states["next"] == ("reserved", 0, "", "")


@pytest.mark.parametrize(
    ("previous", "new", "reason", "message"),
    [
        ("other", "new", "history_pruned", "must match authenticated source_id"),
        ("old", "  ", "history_pruned", "new_source_id is required"),
        ("old", "old", "history_pruned", "must differ"),
        ("old", "new", "bored", "unsupported source replacement reason"),
    ],
)
async def test_invalid_requests(
    scope: SyncService, previous: str, new: str, reason: str, message: str
) -> None:
    with pytest.raises(SnapshotSessionInvalidError, match=message):
        await create_snapshot_session(scope, OLD, _request(previous, new, reason))
    assert "new" not in await _states(scope)


async def test_known_replacement_is_refused(scope: SyncService) -> None:
    await write(scope, "alice", note_inserts("m", 1), writer="taken")
    with pytest.raises(SourceReplacementInvalidError, match="already known"):
        await create_snapshot_session(scope, OLD, _request("old", "taken"))
    assert (await _states(scope))["old"][0] == "active"


async def test_retired_previous_with_other_replacement_is_source_retired(
    scope: SyncService,
) -> None:
    await create_snapshot_session(scope, OLD, _request("old", "new"))
    with pytest.raises(SourceRetiredError) as caught:
        await create_snapshot_session(scope, OLD, _request("old", "another"))
    assert caught.value.to_body() == {
        "error": "source_retired",
        "message": caught.value.message,
        "source_id": "old",
        "replaced_by_source_id": "new",
    }


async def test_retired_replacement_is_not_available(scope: SyncService) -> None:
    await create_snapshot_session(scope, OLD, _request("old", "new"))
    await execute(
        scope.engine,
        "UPDATE sync.source_state SET state = 'retired', replaced_by_source_id = 'x', "
        "retirement_reason = 'history_pruned' WHERE source_id = 'new'",
    )
    with pytest.raises(SourceReplacementInvalidError, match="retired"):
        await create_snapshot_session(scope, OLD, _request("old", "new"))


async def test_reserved_new_source_may_repeat_after_it_became_active(scope: SyncService) -> None:
    await create_snapshot_session(scope, OLD, _request("old", "new"))
    await write(scope, "alice", note_inserts("k", 1), writer="new")
    await create_snapshot_session(scope, OLD, _request("old", "new"))
    assert (await _states(scope))["new"][0] == "active"


async def test_failed_snapshot_rolls_the_rotation_back(pg_engine: AsyncEngine) -> None:
    service = await make_service(pg_engine, max_rows_per_snapshot_session=1)
    await write(service, "alice", note_inserts("n", 2), writer="old")
    with pytest.raises(SnapshotSessionCreateFailedError):
        await create_snapshot_session(service, OLD, _request("old", "new"))
    assert await _states(service) == {"old": ("active", 1, "", "")}
