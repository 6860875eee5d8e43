"""The SQL-rendered pull page (``pull_encoded``) is byte-identical to the Struct path."""

from __future__ import annotations

import msgspec
import pytest

from oversync_sa.errors import PullFailedError
from oversync_sa.server import SyncService
from oversync_sa.server.pull import pull, pull_encoded
from oversync_sa.wire.models import PullResponse
from tests.server.reading._support import ODD_KEYS, Actor, execute, write

ALICE = Actor("alice")
_encode = msgspec.json.Encoder().encode


async def _mixed_history(service: SyncService) -> None:
    await write(
        service, "alice",
        "INSERT INTO app.people (id, name) VALUES "
        "('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'Ann'),"
        " ('00000000-0000-4000-8000-000000000001', 'Bo \"the\" <b>&</b>');"
        "INSERT INTO app.notes (code, body) VALUES (:k0, 'x'), (:k1, NULL), (:k2, :k3),"
        " (:k3, 'y'), (:k4, '\\u00e9');"
        "INSERT INTO app.blobs (id, label, data) VALUES "
        "('00000000-0000-4000-8000-0000000000b1', 'blob', '\\x00ff10'::bytea),"
        " ('00000000-0000-4000-8000-0000000000b2', NULL, NULL)",
        writer='dev "odd" \\ é',
        **{f"k{i}": key for i, key in enumerate(ODD_KEYS)},
    )
    await write(
        service, "alice",
        "UPDATE app.people SET name = 'Ann 2' WHERE id = '6ba7b810-9dad-11d1-80b4-00c04fd430c8';"
        "DELETE FROM app.notes WHERE code = :k1;"
        "DELETE FROM app.blobs WHERE id = '00000000-0000-4000-8000-0000000000b2'",
        k1=ODD_KEYS[1],
    )
    await write(service, "alice", "DELETE FROM app.people")
    await write(service, "bob", "INSERT INTO app.notes (code, body) VALUES ('bob', 'b')")


async def _both(service: SyncService, **kwargs: int) -> tuple[PullResponse, bytes, bytes]:
    structs = await pull(service, ALICE, **kwargs)
    encoded = await pull_encoded(service, ALICE, **kwargs)
    assert encoded.stable_bundle_seq == structs.stable_bundle_seq
    assert encoded.has_more == structs.has_more
    assert encoded.bundle_count == len(structs.bundles)
    assert encoded.row_count == sum(len(b.rows) for b in structs.bundles)
    assert encoded.last_bundle_seq == (structs.bundles[-1].bundle_seq if structs.bundles else 0)
    return structs, _encode(structs), _encode(encoded.wire)


async def test_mixed_page_is_byte_identical(service: SyncService) -> None:
    await _mixed_history(service)
    structs, expected, actual = await _both(service)
    assert actual == expected
    # The page really covers what the comparison is meant to cover.
    ops = [r.op for b in structs.bundles for r in b.rows]
    assert {"INSERT", "UPDATE", "DELETE"} <= set(ops)
    keys = {v for b in structs.bundles for r in b.rows for v in r.key.values()}
    assert set(ODD_KEYS) - {ODD_KEYS[1]} <= keys
    assert b'"payload"' not in actual.split(b'"op":"DELETE"')[1].split(b"}")[0]
    assert b"\\u0001" in actual
    assert b"\xf0\x9f\x98\x80" in actual
    assert msgspec.json.decode(actual, type=PullResponse) == structs


@pytest.mark.parametrize(
    "page",
    [
        {"max_bundles": 1},
        {"max_bundles": 2, "after_bundle_seq": 1},
        {"after_bundle_seq": 2, "target_bundle_seq": 3},
        {"after_bundle_seq": 3},
        {"target_bundle_seq": 9},
    ],
)
async def test_paging_answers_are_byte_identical(
    service: SyncService, page: dict[str, int]
) -> None:
    await _mixed_history(service)
    _, expected, actual = await _both(service, **page)
    assert actual == expected


async def test_missing_rows_fail_closed_on_both_paths(service: SyncService) -> None:
    await _mixed_history(service)
    await execute(
        service.engine,
        "DELETE FROM sync.bundle_rows WHERE bundle_seq = 2 AND row_ordinal = 1"
        " AND user_pk = (SELECT user_pk FROM sync.user_state WHERE user_id = 'alice')",
    )
    with pytest.raises(PullFailedError, match="bundle 2"):
        await pull(service, ALICE)
    with pytest.raises(PullFailedError, match="bundle 2"):
        await pull_encoded(service, ALICE)
    # Pages before the damaged bundle are still served identically.
    _, expected, actual = await _both(service, max_bundles=1)
    assert actual == expected


async def test_bundle_without_any_rows_fails_closed(service: SyncService) -> None:
    await _mixed_history(service)
    await execute(
        service.engine,
        "DELETE FROM sync.bundle_rows WHERE bundle_seq = 3"
        " AND user_pk = (SELECT user_pk FROM sync.user_state WHERE user_id = 'alice')",
    )
    for pull_fn in (pull, pull_encoded):
        with pytest.raises(PullFailedError, match="bundle 3 has 0"):
            await pull_fn(service, ALICE, after_bundle_seq=2)
