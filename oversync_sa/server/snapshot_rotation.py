"""Source rotation requested with a snapshot session (SERVER.md §7.2, ``source_replacement``).

A client whose history was pruned (or whose source sequence broke) rebuilds from a snapshot and
continues under a fresh source id. The rotation retires the old source and reserves the new one
in the snapshot-creation transaction, so it takes effect exactly when the snapshot does.
Repeating the same rotation (e.g. after a lost response) is idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.errors import SnapshotSessionInvalidError, SourceReplacementInvalidError
from oversync_sa.server.sources import (
    SourceState,
    load_source_state,
    reserve_source,
    retire_source,
    retired_error,
)
from oversync_sa.wire.models import SnapshotSourceReplacement, SourceReplacementReason

__all__ = ["ValidRotation", "apply_source_replacement", "validate_source_replacement"]

_log: Final = logging.getLogger("oversync_sa.server.sources")

_REASONS: Final = frozenset(r.value for r in SourceReplacementReason)


@dataclass(frozen=True, slots=True)
class ValidRotation:
    """A trimmed, validated rotation request."""

    previous_source_id: str
    new_source_id: str
    reason: str


def validate_source_replacement(
    replacement: SnapshotSourceReplacement, actor_source_id: str
) -> ValidRotation:
    """Trim and check the request; every failure is ``400 snapshot_session_invalid``."""
    previous = replacement.previous_source_id.strip()
    new = replacement.new_source_id.strip()
    reason = str(replacement.reason).strip()
    if previous != actor_source_id:
        raise SnapshotSessionInvalidError("previous_source_id must match authenticated source_id")
    if not new:
        raise SnapshotSessionInvalidError("new_source_id is required for source replacement")
    if new == previous:
        raise SnapshotSessionInvalidError("new_source_id must differ from previous_source_id")
    if reason not in _REASONS:
        raise SnapshotSessionInvalidError(f"unsupported source replacement reason {reason!r}")
    return ValidRotation(previous, new, reason)


async def apply_source_replacement(
    conn: AsyncConnection, user_id: str, user_pk: int, rotation: ValidRotation
) -> None:
    """Retire ``previous`` for ``new`` and reserve ``new``, in the caller's transaction.

    Both ``source_state`` rows are locked first. Raises :class:`SourceRetiredError` when
    ``previous`` was already retired in favour of a *different* source, and
    :class:`SourceReplacementInvalidError` when ``new`` cannot serve as the replacement.
    """
    previous = await load_source_state(conn, user_pk, rotation.previous_source_id, for_update=True)
    new = await load_source_state(conn, user_pk, rotation.new_source_id, for_update=True)

    if previous is not None and previous.state is SourceState.RETIRED:
        if previous.replaced_by_source_id != rotation.new_source_id:
            raise retired_error(user_id, previous)
        if new is None:
            await reserve_source(conn, user_pk, rotation.new_source_id)
        elif new.state is SourceState.RETIRED:
            raise SourceReplacementInvalidError(
                f"replacement source {rotation.new_source_id} is retired and cannot serve a "
                "rotated rebuild"
            )
        # reserved or active: the same rotation already happened; nothing to do.
        return

    if new is not None:
        raise SourceReplacementInvalidError(
            f"replacement source {rotation.new_source_id} is already known for user {user_id}"
        )
    await reserve_source(conn, user_pk, rotation.new_source_id)
    await retire_source(
        conn,
        user_pk,
        rotation.previous_source_id,
        replaced_by=rotation.new_source_id,
        reason=rotation.reason,
    )
    _log.info(
        "source %s of user %s retired for %s (%s)",
        rotation.previous_source_id, user_id, rotation.new_source_id, rotation.reason,
        extra={
            "user": user_id,
            "source_id": rotation.previous_source_id,
            "replaced_by_source_id": rotation.new_source_id,
            "reason": rotation.reason,
        },
    )
