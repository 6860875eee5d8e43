"""Per-(user, source) sequencing, activation and retirement (SERVER.md §7.2).

``sync.source_state`` holds each source's committed watermark ``max_committed_source_bundle_id``
and survives history pruning, so a source's sequence is never reset by retention.

States: absent (next id 1), ``reserved`` (created by a rotation, next id 1), ``active`` (next id
``max_committed + 1``) and ``retired`` (every sequenced write fails with ``source_retired``).
The building blocks snapshot rotation needs (:func:`load_source_state`, :func:`reserve_source`,
:func:`retire_source`) are public so that code can compose them in its own transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.errors import SourceRetiredError

__all__ = [
    "source_record",
    "SourceState",
    "SourceStateRecord",
    "expected_after",
    "load_source_state",
    "next_expected_source_bundle_id",
    "reserve_source",
    "retire_source",
    "retired_error",
]


class SourceState(enum.StrEnum):
    """``source_state.state``."""

    ACTIVE = "active"
    RESERVED = "reserved"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class SourceStateRecord:
    """One ``sync.source_state`` row."""

    user_pk: int
    source_id: str
    state: SourceState
    max_committed_source_bundle_id: int
    replaced_by_source_id: str
    retirement_reason: str

    @property
    def next_expected_source_bundle_id(self) -> int:
        """The only ``source_bundle_id`` the next sequenced write of this source may use."""
        return self.max_committed_source_bundle_id + 1


_SELECT: Final = (
    "SELECT user_pk, source_id, state, max_committed_source_bundle_id, "
    "replaced_by_source_id, retirement_reason FROM sync.source_state "
    "WHERE user_pk = :user_pk AND source_id = :source_id"
)
_LOAD_SQL: Final = text(_SELECT)
_LOAD_FOR_UPDATE_SQL: Final = text(_SELECT + " FOR UPDATE")

_RESERVE_SQL: Final = text(
    "INSERT INTO sync.source_state (user_pk, source_id, state, "
    "max_committed_source_bundle_id, replaced_by_source_id, retirement_reason) "
    "VALUES (:user_pk, :source_id, 'reserved', 0, '', '')"
)
_RETIRE_SQL: Final = text(
    "INSERT INTO sync.source_state (user_pk, source_id, state, "
    "max_committed_source_bundle_id, replaced_by_source_id, retirement_reason) "
    "VALUES (:user_pk, :source_id, 'retired', 0, :replaced_by, :reason) "
    "ON CONFLICT (user_pk, source_id) DO UPDATE SET state = 'retired', "
    "replaced_by_source_id = EXCLUDED.replaced_by_source_id, "
    "retirement_reason = EXCLUDED.retirement_reason"
)


def retired_error(user_id: str, record: SourceStateRecord) -> SourceRetiredError:
    """The wire error for a write attempted by a retired source."""
    replaced_by = record.replaced_by_source_id
    suffix = f" and replaced by {replaced_by}" if replaced_by else ""
    return SourceRetiredError(
        f"source {record.source_id} for user {user_id} was retired{suffix}",
        source_id=record.source_id,
        replaced_by_source_id=replaced_by,
    )


async def load_source_state(
    conn: AsyncConnection, user_pk: int, source_id: str, *, for_update: bool = False
) -> SourceStateRecord | None:
    """The source's row, optionally locked ``FOR UPDATE``; ``None`` when it does not exist.

    Locking an absent row locks nothing; sequenced writers are already serialised per user by
    the advisory lock (§3.6), which is what makes the check-then-insert safe.
    """
    sql = _LOAD_FOR_UPDATE_SQL if for_update else _LOAD_SQL
    row = (await conn.execute(sql, {"user_pk": user_pk, "source_id": source_id})).one_or_none()
    return None if row is None else source_record(row)


def source_record(row: Sequence[Any]) -> SourceStateRecord | None:
    """A ``source_state`` row from its six columns in table order (``None`` when an outer join
    found none)."""
    if row[0] is None:
        return None
    return SourceStateRecord(
        user_pk=int(row[0]),
        source_id=str(row[1]),
        state=SourceState(row[2]),
        max_committed_source_bundle_id=int(row[3]),
        replaced_by_source_id=str(row[4]),
        retirement_reason=str(row[5]),
    )


async def next_expected_source_bundle_id(
    conn: AsyncConnection, user_pk: int, user_id: str, source_id: str, *, for_update: bool = True
) -> tuple[int, int]:
    """``(next expected source_bundle_id, max committed)`` for a source; locks its row.

    Raises :class:`SourceRetiredError` for a retired source.
    """
    return expected_after(
        user_id, await load_source_state(conn, user_pk, source_id, for_update=for_update)
    )


def expected_after(user_id: str, record: SourceStateRecord | None) -> tuple[int, int]:
    """``(next expected source_bundle_id, max committed)`` from an already loaded source row.

    ``None`` (a source never seen) expects 1. Raises :class:`SourceRetiredError` for a retired
    source.
    """
    if record is None:
        return 1, 0
    if record.state is SourceState.RETIRED:
        raise retired_error(user_id, record)
    return record.next_expected_source_bundle_id, record.max_committed_source_bundle_id


async def reserve_source(conn: AsyncConnection, user_pk: int, source_id: str) -> None:
    """Insert ``source_id`` as ``reserved`` (the replacement side of a rotation)."""
    await conn.execute(_RESERVE_SQL, {"user_pk": user_pk, "source_id": source_id})


async def retire_source(
    conn: AsyncConnection, user_pk: int, source_id: str, *, replaced_by: str, reason: str
) -> None:
    """Retire ``source_id`` in favour of ``replaced_by``, keeping its committed watermark.

    A source that never committed is recorded as retired with watermark 0.
    """
    await conn.execute(
        _RETIRE_SQL,
        {"user_pk": user_pk, "source_id": source_id, "replaced_by": replaced_by, "reason": reason},
    )
