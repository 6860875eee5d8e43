"""Integers beyond +-2^53 survive the server exactly, while hashes stay Go's (SERVER.md §11.3).

Go decodes push payloads and captured rows into float64, so ``9007199254740993`` is stored as
``...992``. Here the stored business row, the committed bundle payload and the snapshot payload
keep every digit; ``bundle_hash`` is still computed over the float64 form a Go client hashes.
"""

from __future__ import annotations

import uuid

import pytest

from oversync_sa.errors import OversyncError, PushConflictError
from oversync_sa.server import Actor, SyncService
from oversync_sa.wire import bundle_hash_of_received_rows, canonicalize
from tests.server.bundles._support import exec_write, fetch, sql
from tests.server.push._support import initialize, push, row

BEYOND = 2**53 + 1
SOURCE = "dev-a"


async def _typed_row(service: SyncService, user: str, **values: object) -> tuple[str, int]:
    """Push one typed_rows INSERT; return its key and committed bundle_seq."""
    key = str(uuid.uuid4())
    commit = await push(service, user, SOURCE, 1, [
        row("typed_rows", key, payload={"id": key, "name": "n", **values}),
    ])
    return key, commit.bundle_seq


@pytest.mark.parametrize(
    "big", [BEYOND, -BEYOND, 2**63 - 1, -(2**63), 2**60, 12345678901234567, 2**53, -7]
)
async def test_bigint_beyond_2_53_is_stored_sent_and_hashed_correctly(
    service: SyncService, big: int
) -> None:
    user = f"exact-{uuid.uuid4().hex[:8]}"
    await initialize(service, user, SOURCE)
    key, seq = await _typed_row(service, user, big=big, small=-(2**31))

    stored = await fetch(
        service.engine,
        "SELECT big, small FROM business.typed_rows WHERE _sync_scope_id = :u AND id = :id",
        u=user, id=uuid.UUID(key),
    )
    assert tuple(stored[0]) == (big, -(2**31))
    page = await service.committed_bundle_rows(Actor(user, SOURCE), seq)
    payload = bytes(page.rows[0].payload)
    assert f'"big":{big},'.encode() in payload
    assert b'"small":-2147483648' in payload
    # The hash is what a Go client computes from these very rows after its float64 decoding.
    assert bundle_hash_of_received_rows(page.rows)[0] == page.bundle_hash
    if abs(big) > 2**53:
        assert canonicalize(payload) != payload  # the Go form differs, yet the hash matches

    session = await service.create_snapshot_session(Actor(user, SOURCE))
    chunk = await service.snapshot_chunk(Actor(user, SOURCE), session.snapshot_id)
    snap = bytes(chunk.rows[0].payload).replace(b" ", b"")
    assert f'"big":{big},'.encode() in snap


async def test_conflict_server_row_rewritten_for_bytea_keeps_exact_integers(
    service: SyncService,
) -> None:
    # A non-null bytea makes the server re-serialise the conflict's server_row (SERVER.md §3.4).
    user = f"exact-{uuid.uuid4().hex[:8]}"
    await initialize(service, user, SOURCE)
    key, _seq = await _typed_row(service, user, big=2**63 - 1, data="AAH/")
    with pytest.raises(PushConflictError) as caught:
        await push(service, user, SOURCE, 2, [
            row("typed_rows", key, op="UPDATE", base=0, payload={"id": key, "name": "stale"}),
        ])
    assert caught.value.conflict is not None
    server_row = bytes(caught.value.conflict["server_row"])
    assert b'"data":"AAH/"' in server_row
    assert b'"big":9223372036854775807' in server_row


async def test_integer_column_keeps_int32_extremes_and_rejects_beyond_them(
    service: SyncService,
) -> None:
    user = f"exact-{uuid.uuid4().hex[:8]}"
    await initialize(service, user, SOURCE)
    _key, seq = await _typed_row(service, user, small=2**31 - 1, big=BEYOND)
    page = await service.committed_bundle_rows(Actor(user, SOURCE), seq)
    assert b'"small":2147483647' in bytes(page.rows[0].payload)

    # An integer column cannot hold 2^53 + 1: PostgreSQL refuses it (nothing is rounded into
    # range or stored), exactly as for any other out-of-range value.
    with pytest.raises(OversyncError):
        await push(service, user, SOURCE, 2, [
            row("typed_rows", str(uuid.uuid4()), payload={"name": "n", "small": BEYOND}),
        ])
    assert len(await fetch(
        service.engine,
        "SELECT 1 FROM business.typed_rows WHERE _sync_scope_id = :u", u=user,
    )) == 1


async def test_server_write_captures_exact_bigint(service: SyncService) -> None:
    key = str(uuid.uuid4())
    bundle = await exec_write(service, "alice-exact", sql(
        "INSERT INTO business.typed_rows (id, name, big, small) VALUES "
        f"('{key}', 'n', {-(2**63) + 1}, 5)"
    ))
    payload = bytes(bundle.rows[0].payload)
    assert b'"big":-9223372036854775807' in payload
    assert bundle_hash_of_received_rows(bundle.rows)[0] == bundle.bundle_hash
