"""Capture + finalisation end to end: normalisation, cascades, hashing, isolation (§3, §11.7)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from oversync_sa.server import SyncService
from oversync_sa.server.context import BundleContext, set_bundle_context
from oversync_sa.server.finalize import CapturedEvent, finalize_bundle, normalize_events
from oversync_sa.wire.canonical import canonicalize
from oversync_sa.wire.hashing import bundle_hash_of_received_rows
from oversync_sa.wire.models import BundleRow
from tests.server.bundles._support import exec_write, fetch, sql

U1 = "00000000-0000-4000-8000-000000000001"
U2 = "00000000-0000-4000-8000-000000000002"
P1 = "00000000-0000-4000-8000-0000000000a1"
P2 = "00000000-0000-4000-8000-0000000000a2"


def _ops(rows: tuple[BundleRow, ...]) -> list[tuple[str, str, str]]:
    return [(r.table, next(iter(r.key.values())), r.op.value) for r in rows]


async def test_insert_then_delete_vanishes_and_other_rows_keep_first_touch_order(
    service: SyncService,
) -> None:
    bundle = await exec_write(
        service,
        "alice",
        sql(
            f"INSERT INTO business.tags (code, label) VALUES ('b', 'x'), ('gone', 'y'), ('a', 'z');"
            f"UPDATE business.tags SET label = 'x2' WHERE _sync_scope_id = :scope AND code = 'b';"
            f"DELETE FROM business.tags WHERE _sync_scope_id = :scope AND code = 'gone';"
            f"INSERT INTO business.users (id, name) VALUES ('{U1}', 'A')"
        ),
    )
    assert _ops(bundle.rows) == [
        ("tags", "b", "INSERT"),
        ("tags", "a", "INSERT"),
        ("users", U1, "INSERT"),
    ]
    assert bytes(bundle.rows[0].payload) == b'{"code":"b","label":"x2"}'
    assert bundle.row_count == 3
    # The stage is empty after finalisation; row_state follows the committed rows only.
    assert await fetch(service.engine, "SELECT * FROM sync.bundle_capture_stage") == []
    states = await fetch(
        service.engine,
        "SELECT convert_from(key_bytes, 'UTF8'), bundle_seq, deleted "
        "FROM sync.row_state WHERE table_id = 2 ORDER BY 1",
    )
    assert [tuple(r) for r in states] == [("a", 1, False), ("b", 1, False)]


async def test_delete_then_reinsert_becomes_update_and_delete_is_tombstoned(
    service: SyncService,
) -> None:
    await exec_write(
        service,
        "alice",
        sql("INSERT INTO business.tags (code, label) VALUES ('k', 'one'), ('d', 'dead')"),
    )
    bundle = await exec_write(
        service,
        "alice",
        sql(
            "DELETE FROM business.tags WHERE _sync_scope_id = :scope AND code = 'k';"
            "INSERT INTO business.tags (code, label) VALUES ('k', 'two');"
            "DELETE FROM business.tags WHERE _sync_scope_id = :scope AND code = 'd'"
        ),
    )
    assert _ops(bundle.rows) == [("tags", "k", "UPDATE"), ("tags", "d", "DELETE")]
    assert bytes(bundle.rows[0].payload) == b'{"code":"k","label":"two"}'
    assert bundle.rows[1].payload == msgspec_absent()
    deleted = await fetch(
        service.engine,
        "SELECT deleted, bundle_seq FROM sync.row_state WHERE key_bytes = convert_to('d','UTF8')",
    )
    assert tuple(deleted[0]) == (True, 2)
    stored = await fetch(
        service.engine,
        "SELECT row_ordinal, op_code, payload_wire::text FROM sync.bundle_rows "
        "WHERE bundle_seq = 2 ORDER BY row_ordinal",
    )
    assert [tuple(r) for r in stored] == [(1, 2, '{"code":"k","label":"two"}'), (2, 3, None)]


def msgspec_absent() -> object:
    return BundleRow(schema="s", table="t", key={}, op="DELETE", row_version=1).payload  # type: ignore[arg-type]


async def test_key_change_is_delete_of_old_key_then_insert_of_new(service: SyncService) -> None:
    await exec_write(service, "alice", sql("INSERT INTO business.tags (code) VALUES ('old')"))
    bundle = await exec_write(
        service,
        "alice",
        sql("UPDATE business.tags SET code = 'new' WHERE _sync_scope_id = :scope AND code = 'old'"),
    )
    assert _ops(bundle.rows) == [("tags", "old", "DELETE"), ("tags", "new", "INSERT")]


async def test_cascades_and_trigger_made_writes_join_the_bundle(service: SyncService) -> None:
    created = await exec_write(
        service,
        "alice",
        sql(
            f"INSERT INTO business.users (id, name) VALUES ('{U1}', 'A');"
            f"INSERT INTO business.posts (id, title, author_id) VALUES ('{P1}', 't', '{U1}')"
        ),
    )
    # The user's post_count update (made by a user trigger) folds into its INSERT.
    assert _ops(created.rows) == [("users", U1, "INSERT"), ("posts", P1, "INSERT")]
    assert b'"post_count":1' in bytes(created.rows[0].payload)

    removed = await exec_write(
        service,
        "alice",
        sql(f"DELETE FROM business.users WHERE _sync_scope_id = :scope AND id = '{U1}'"),
    )
    assert _ops(removed.rows) == [("users", U1, "DELETE"), ("posts", P1, "DELETE")]


async def test_writes_outside_a_bundle_context_are_rejected_and_counted(
    service: SyncService,
) -> None:
    with pytest.raises(DBAPIError, match="requires oversync sync bundle context"):
        async with service.engine.begin() as conn:
            await conn.execute(
                sa.text("INSERT INTO business.tags (_sync_scope_id, code) VALUES ('alice', 'x')")
            )
    rows = await fetch(service.engine, "SELECT count(*) FROM business.tags")
    assert rows[0][0] == 0
    counter = await fetch(
        service.engine, "SELECT last_value, is_called FROM sync.rejected_registered_write_seq"
    )
    assert tuple(counter[0]) == (1, True)


async def test_bundle_hash_matches_client_recomputation(service: SyncService) -> None:
    await exec_write(service, "alice", sql("INSERT INTO business.tags (code) VALUES ('z')"))
    bundle = await exec_write(
        service,
        "alice",
        sql(
            f"INSERT INTO business.typed_rows (id, name, big, data, doc) VALUES "
            f"('{U1}', '<a&b>', 9007199254740993, '\\x00ff', '{{\"n\": 1.50}}');"
            "DELETE FROM business.tags WHERE _sync_scope_id = :scope AND code = 'z'"
        ),
    )
    # Rebuild the rows the way a client receives them: from the stored table, as JSON text.
    stored = await fetch(
        service.engine,
        "SELECT c.schema_name, c.table_name, r.op_code, r.payload_wire::text "
        "FROM sync.bundle_rows r JOIN sync.table_catalog c USING (table_id) "
        "WHERE r.bundle_seq = :seq ORDER BY r.row_ordinal",
        seq=bundle.bundle_seq,
    )
    received = [
        BundleRow(
            schema=schema,
            table=table,
            key=dict(wire.key),
            op=wire.op,
            row_version=bundle.bundle_seq,
            **({} if payload is None else {"payload": _raw(payload)}),
        )
        for (schema, table, _op, payload), wire in zip(stored, bundle.rows, strict=True)
    ]
    digest, size = bundle_hash_of_received_rows(received)
    assert digest == bundle.bundle_hash
    assert size == bundle.byte_count
    log = await fetch(
        service.engine,
        "SELECT encode(bundle_hash, 'hex'), byte_count, row_count FROM sync.bundle_log "
        "WHERE bundle_seq = :seq",
        seq=bundle.bundle_seq,
    )
    assert tuple(log[0]) == (bundle.bundle_hash, bundle.byte_count, 2)


def _raw(text: str) -> object:
    import msgspec

    return msgspec.Raw(text.encode())


async def test_scope_isolation_same_keys_in_two_scopes(service: SyncService) -> None:
    for scope in ("alice", "bob"):
        await exec_write(
            service, scope, sql(f"INSERT INTO business.users (id, name) VALUES ('{U2}', '{scope}')")
        )
    bundle = await exec_write(
        service,
        "alice",
        sql(f"UPDATE business.users SET name = 'A2' WHERE _sync_scope_id = :scope AND id = '{U2}'"),
    )
    assert _ops(bundle.rows) == [("users", U2, "UPDATE")]
    names = await fetch(
        service.engine, "SELECT _sync_scope_id, name FROM business.users ORDER BY 1"
    )
    assert [tuple(r) for r in names] == [("alice", "A2"), ("bob", "bob")]
    seqs = await fetch(
        service.engine,
        "SELECT u.user_id, r.bundle_seq FROM sync.row_state r JOIN sync.user_state u "
        "USING (user_pk) ORDER BY 1",
    )
    assert [tuple(r) for r in seqs] == [("alice", 2), ("bob", 1)]

    # Touching another scope's row without scope filtering fails the whole bundle.
    with pytest.raises(DBAPIError, match="scope mismatch"):
        await exec_write(service, "alice", sql(f"DELETE FROM business.users WHERE id = '{U2}'"))
    assert len(await fetch(service.engine, "SELECT 1 FROM business.users")) == 2


async def test_finalize_without_events_returns_none(service: SyncService) -> None:
    async with service.engine.begin() as conn:
        await set_bundle_context(conn, BundleContext("alice", 1, "s", 1))
        assert (
            await finalize_bundle(
                conn, service.runtime, user_pk=1, source_id="s", source_bundle_id=1
            )
            is None
        )


def test_normalize_events_applies_events_in_ordinal_order() -> None:
    k = b"k"
    events = [
        CapturedEvent(3, 1, 3, k, None),
        CapturedEvent(1, 1, 2, k, '{"a": 1}'),
        CapturedEvent(2, 1, 3, k, None),
        CapturedEvent(4, 1, 1, k, '{"a": 2}'),
        CapturedEvent(5, 2, 1, k, '{"b": 1}'),
    ]
    rows = normalize_events(events)
    assert [(r.table_id, r.op_code, r.payload, r.first_ordinal) for r in rows] == [
        (1, 2, '{"a": 2}', 1),
        (2, 1, '{"b": 1}', 5),
    ]
    assert canonicalize(rows[0].payload or "") == b'{"a":2}'
