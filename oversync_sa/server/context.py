"""The transaction-local "bundle context" read by the capture triggers (SERVER.md §3.2).

The owner guard and the capture trigger only accept writes to registered tables while
``oversync.bundle_user_id`` / ``oversync.bundle_user_pk`` are set for the running transaction.
All settings are transaction-local (``set_config(..., true)``), so they vanish at commit or
rollback and can never leak to the next user of a pooled connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.errors import OversyncError
from oversync_sa.server import fastsql

__all__ = [
    "SCOPE_FILTER_SETTING",
    "BundleContext",
    "BundleContextConflictError",
    "enable_scope_filter",
    "read_bundle_context",
    "set_bundle_context",
]

#: When ``'on'``, the owner guard skips other scopes' rows on UPDATE/DELETE instead of raising.
SCOPE_FILTER_SETTING: Final = "oversync.bundle_scope_filter"

_SETTINGS: Final = (
    "oversync.bundle_user_id",
    "oversync.bundle_user_pk",
    "oversync.bundle_source_id",
    "oversync.bundle_source_bundle_id",
    "oversync.bundle_initialization_id",
)

_READ_SQL: Final = text(
    "SELECT " + ", ".join(f"COALESCE(current_setting('{n}', true), '')" for n in _SETTINGS)
)
# Read and install in one round trip: the current values come back for the clash message, and
# the settings are written only when none clashes (an empty value never clashes), which is the
# rule set_bundle_context applies in Python to the returned values. MATERIALIZED reads them
# before any set_config runs.
_SET_SQL: Final = text(
    "WITH cur AS MATERIALIZED (SELECT "
    + ", ".join(
        f"COALESCE(current_setting('{n}', true), '') AS c{i}" for i, n in enumerate(_SETTINGS)
    )
    + ") SELECT "
    + ", ".join(f"c{i}" for i in range(len(_SETTINGS)))
    + ", CASE WHEN "
    + " AND ".join(f"(c{i} = '' OR c{i} = :v{i})" for i in range(len(_SETTINGS)))
    + " THEN concat("
    + ", ".join(f"set_config('{n}', :v{i}, true)" for i, n in enumerate(_SETTINGS))
    + ") END FROM cur"
)


class BundleContextConflictError(OversyncError):
    """The transaction already carries a bundle context for another user, source or bundle."""


@dataclass(frozen=True, slots=True)
class BundleContext:
    """Who the running transaction writes for; ``initialization_id`` is ``""`` unless seeding."""

    user_id: str
    user_pk: int
    source_id: str
    source_bundle_id: int
    initialization_id: str = ""

    def _values(self) -> tuple[str, ...]:
        return (
            self.user_id,
            str(self.user_pk),
            self.source_id,
            str(self.source_bundle_id),
            self.initialization_id,
        )


async def read_bundle_context(conn: AsyncConnection) -> tuple[str, ...]:
    """The five raw setting values of the running transaction (``""`` where unset)."""
    row = (await conn.execute(_READ_SQL)).one()
    return tuple(str(v) for v in row)


async def set_bundle_context(conn: AsyncConnection, context: BundleContext) -> None:
    """Install ``context`` for the running transaction.

    Setting the same context twice is a no-op; a non-empty current value that differs from the
    new one raises :class:`BundleContextConflictError` and changes nothing, so one transaction
    can never produce rows attributed to two users or sources.
    """
    wanted = context._values()
    row = (
        await fastsql.execute(conn, _SET_SQL, {f"v{i}": v for i, v in enumerate(wanted)})
    ).one()
    current = tuple(str(v) for v in row[: len(_SETTINGS)])
    clashes = [
        name
        for name, old, new in zip(_SETTINGS, current, wanted, strict=True)
        if old and old != new
    ]
    if clashes:
        raise BundleContextConflictError(
            f"transaction already carries conflicting sync bundle context ({', '.join(clashes)})"
        )


async def enable_scope_filter(conn: AsyncConnection) -> None:
    """Make the owner guard skip, rather than reject, other scopes' rows until the tx ends.

    Used for ORM sessions: unit-of-work UPDATE/DELETE statements address rows by the declared
    primary key only, which is not scope-qualified.
    """
    await conn.execute(text(f"SELECT set_config('{SCOPE_FILTER_SETTING}', 'on', true)"))
