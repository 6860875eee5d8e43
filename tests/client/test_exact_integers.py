"""Client side of exact integers beyond +-2^53 (CLIENT.md §12.39: Go rounds them via float64)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client import SyncTable
from oversync_sa.client.outbox import freeze_outbox
from oversync_sa.client.replay import payloads_equal
from oversync_sa.client.state import ensure_source

from .conftest import SIMULATOR_DDL, execute_all, manage

BEYOND = 2**53 + 1


@pytest.mark.parametrize("value", [BEYOND, -BEYOND, 2**63 - 1, -(2**63), 2**60])
async def test_freeze_sends_the_exact_integer(conn: AsyncConnection, value: int) -> None:
    await execute_all(conn, [SIMULATOR_DDL["typed_rows"]])
    managed = await manage(conn, [SyncTable("typed_rows", "id")])
    await ensure_source(conn, "src")
    await conn.exec_driver_sql(
        "INSERT INTO typed_rows (id, name, count_value, enabled_flag) VALUES ('k', 'n', ?, 0)",
        (value,),
    )

    bundle = await freeze_outbox(conn, managed, source_id="src", initialization_id="")

    assert bundle is not None
    (row,) = bundle.rows
    assert row.wire_payload is not None
    assert f'"count_value":{value},'.encode() in row.wire_payload.encode()
    assert f'"count_value":{value},' in (row.local_payload or "")
    # The pushed row carries the same bytes.
    assert bytes(row.push_row().payload) == row.wire_payload.encode()


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        ('{"n":9007199254740993}', '{"n":9007199254740992}', False),
        ('{"n":-9223372036854775807}', '{"n":-9223372036854775808}', False),
        ('{"n":9007199254740993}', '{"n": 9007199254740993}', True),
        # Everything else is still §5.3 equality: 1 = 1.0, member order irrelevant.
        ('{"a":1,"b":2.50}', '{"b":2.5,"a":1.0}', True),
        ('{"n":9007199254740993.0}', '{"n":9007199254740992}', True),
    ],
)
def test_payload_equality_distinguishes_integers_beyond_2_53(
    left: str, right: str, equal: bool
) -> None:
    # A replay compares the live row with the uploaded one; under float64 equality an edit
    # from ...993 to ...992 made during the push would look unchanged and be overwritten.
    assert payloads_equal(left, right) is equal
