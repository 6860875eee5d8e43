"""Connect lifecycle (SERVER.md §4): the decision table, leases and the first-connect race."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from oversync_sa.errors import (
    ConnectFailedError,
    ConnectInvalidError,
    InitializationExpiredError,
    InitializationStaleError,
    ServiceUnavailableError,
)
from oversync_sa.server import SyncService
from oversync_sa.server.connect import connect, require_active_lease
from oversync_sa.wire.models import ConnectRequest, ConnectResolution
from oversync_sa.wire.timefmt import parse_timestamp
from tests.server.push._support import fetch

PENDING = ConnectRequest(has_local_pending_rows=True)
EMPTY = ConnectRequest(has_local_pending_rows=False)


async def _scope(service: SyncService, user: str) -> tuple[object, ...]:
    rows = await fetch(
        service.engine,
        "SELECT ss.state_code, ss.initializer_source_id, ss.initialized_by_source_id "
        "FROM sync.scope_state ss JOIN sync.user_state us USING (user_pk) WHERE us.user_id = :u",
        u=user,
    )
    return rows[0]


async def _age_lease(service: SyncService, user: str, interval: str) -> None:
    async with service.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE sync.scope_state "
                "SET lease_expires_at = now() + CAST(CAST(:i AS text) AS interval) "
                "WHERE user_pk = (SELECT user_pk FROM sync.user_state WHERE user_id = :u)"
            ),
            {"i": interval, "u": user},
        )


async def test_empty_first_connect_initializes_and_later_connects_are_remote_authoritative(
    service: SyncService,
) -> None:
    first = await connect(service, "u1", "dev-a", EMPTY)
    assert first.resolution is ConnectResolution.INITIALIZE_EMPTY
    assert first.initialization_id == ""
    assert await _scope(service, "u1") == (2, None, "dev-a")
    for source, req in (("dev-a", PENDING), ("dev-b", EMPTY), ("dev-b", PENDING)):
        again = await connect(service, "u1", source, req)
        assert again.resolution is ConnectResolution.REMOTE_AUTHORITATIVE


async def test_pending_first_connect_gets_lease_that_same_source_reconnect_extends(
    service: SyncService,
) -> None:
    first = await connect(service, "u1", "dev-a", PENDING)
    assert first.resolution is ConnectResolution.INITIALIZE_LOCAL
    assert len(first.initialization_id) == 36
    expiry = parse_timestamp(first.lease_expires_at)
    assert await _scope(service, "u1") == (1, "dev-a", None)

    await _age_lease(service, "u1", "5 minutes")
    again = await connect(service, "u1", "dev-a", PENDING)
    assert again.resolution is ConnectResolution.INITIALIZE_LOCAL
    assert again.initialization_id == first.initialization_id
    assert parse_timestamp(again.lease_expires_at) >= expiry

    other = await connect(service, "u1", "dev-b", PENDING)
    assert other.resolution is ConnectResolution.RETRY_LATER
    assert other.initialization_id == ""
    assert 1 <= other.retry_after_seconds <= 15 * 60
    assert parse_timestamp(other.lease_expires_at) == parse_timestamp(again.lease_expires_at)

    # The initializer reconnecting without pending rows finishes initialization empty.
    done = await connect(service, "u1", "dev-a", EMPTY)
    assert done.resolution is ConnectResolution.INITIALIZE_EMPTY
    assert await _scope(service, "u1") == (2, None, "dev-a")


async def test_retry_after_is_at_least_one_second(service: SyncService) -> None:
    await connect(service, "u1", "dev-a", PENDING)
    await _age_lease(service, "u1", "300 milliseconds")
    other = await connect(service, "u1", "dev-b", EMPTY)
    assert other.resolution is ConnectResolution.RETRY_LATER
    assert other.retry_after_seconds == 1


async def test_expired_lease_is_reset_and_the_next_connect_wins_a_fresh_lease(
    service: SyncService,
) -> None:
    first = await connect(service, "u1", "dev-a", PENDING)
    await _age_lease(service, "u1", "-1 second")
    fresh = await connect(service, "u1", "dev-b", PENDING)
    assert fresh.resolution is ConnectResolution.INITIALIZE_LOCAL
    assert fresh.initialization_id != first.initialization_id
    assert await _scope(service, "u1") == (1, "dev-b", None)


async def test_concurrent_first_connects_have_a_single_winner(service: SyncService) -> None:
    results = await asyncio.gather(
        *(connect(service, "race", f"dev-{i}", PENDING) for i in range(4))
    )
    resolutions = sorted(r.resolution.value for r in results)
    assert resolutions == ["initialize_local", "retry_later", "retry_later", "retry_later"]


async def test_require_active_lease_checks_in_order(service: SyncService) -> None:
    lease = await connect(service, "u1", "dev-a", PENDING)
    ttl = service.config.initialization_lease_ttl
    async with service.engine.begin() as conn:
        with pytest.raises(InitializationStaleError, match="does not own"):
            await require_active_lease(conn, "u1", "dev-b", lease.initialization_id, ttl)
        with pytest.raises(InitializationStaleError, match="initialization_id does not match"):
            await require_active_lease(conn, "u1", "dev-a", lease.initialization_id.upper(), ttl)
        with pytest.raises(InitializationStaleError, match="initialization_id does not match"):
            await require_active_lease(conn, "u1", "dev-a", "", ttl)
        scope = await require_active_lease(conn, "u1", "dev-a", lease.initialization_id, ttl)
        assert scope.initialization_id == lease.initialization_id
    async with service.engine.begin() as conn:
        with pytest.raises(InitializationStaleError, match="no longer initializing"):
            await require_active_lease(conn, "u2", "dev-a", lease.initialization_id, ttl)
    assert InitializationExpiredError.status == 410  # the create path maps expiry to 410


async def test_connect_error_mapping(service: SyncService) -> None:
    with pytest.raises(ConnectInvalidError):
        await connect(service, "u1", "dev-a", None)
    await service.close()
    # After close the generic "closed" error is the endpoint's 500 (§11.24).
    with pytest.raises(ConnectFailedError):
        await connect(service, "u1", "dev-a", EMPTY)


async def test_connect_while_shutting_down_is_503(service: SyncService) -> None:
    async with service.operation():
        closing = asyncio.create_task(service.close())
        await asyncio.sleep(0)
        with pytest.raises(ServiceUnavailableError):
            await connect(service, "u1", "dev-a", EMPTY)
    await closing
