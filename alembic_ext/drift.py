"""Read the live sync state of a database and say where it drifted from the expected one.

Autogenerate compares this with the server projection: whether the ``sync`` layout exists, which
tables the catalog registers (with which id and key), and whether each registered table carries
exactly the two triggers bootstrap would install (SERVER.md §2.5). Triggers are compared
structurally (timing/event bits, function, arguments, enabled flag) rather than by
``pg_get_triggerdef`` text, which varies in event order across PostgreSQL versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oversync_sa.server.catalog_migration import CatalogEntry, read_catalog
from oversync_sa.server.triggers import (
    CAPTURE_FUNCTION,
    CAPTURE_TRIGGER,
    OWNER_GUARD_FUNCTION,
    OWNER_GUARD_TRIGGER,
)

__all__ = ["LiveSyncState", "TriggerInfo", "read_live_state", "trigger_drift"]

# pg_trigger.tgtype bits: ROW=1, BEFORE=2, INSERT=4, DELETE=8, UPDATE=16.
_GUARD_TYPE: Final = 1 | 2 | 4 | 8 | 16
_CAPTURE_TYPE: Final = 1 | 4 | 8 | 16

_TRIGGERS: Final = sa.text(
    "SELECT n.nspname AS schema, c.relname AS table, t.tgname AS name, t.tgtype AS type,"
    " t.tgenabled AS enabled, t.tgnargs AS nargs, t.tgargs AS args,"
    " pn.nspname || '.' || p.proname AS function"
    " FROM pg_catalog.pg_trigger t"
    " JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid"
    " JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace"
    " WHERE NOT t.tgisinternal AND t.tgname IN (:guard, :capture)"
)
_PROBE: Final = sa.text(
    "SELECT to_regclass('sync.meta') IS NOT NULL AND to_regclass('sync.table_catalog') IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class TriggerInfo:
    """One sync trigger as PostgreSQL stores it."""

    type: int
    enabled: bool
    function: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LiveSyncState:
    """Sync objects present in the database; ``catalog`` maps ``"schema.table"`` to its row."""

    runtime_installed: bool
    catalog: Mapping[str, tuple[int, CatalogEntry]]
    triggers: Mapping[tuple[str, str], Mapping[str, TriggerInfo]]

    def table_triggers(self, name: str) -> Mapping[str, TriggerInfo]:
        schema, table = name.split(".", 1)
        return self.triggers.get((schema, table), {})


def _decode_args(raw: bytes, count: int) -> tuple[str, ...]:
    # tgargs is every argument NUL-terminated, back to back
    return tuple(part.decode("utf-8") for part in bytes(raw).split(b"\x00")[:count])


def read_live_state(conn: Connection) -> LiveSyncState:
    """Inspect the layout markers, the catalog and every sync trigger in the database."""
    installed = bool(conn.scalar(_PROBE))
    catalog = (
        {entry.name: (table_id, entry) for table_id, entry in read_catalog(conn).items()}
        if installed
        else {}
    )
    triggers: dict[tuple[str, str], dict[str, TriggerInfo]] = {}
    rows = conn.execute(_TRIGGERS, {"guard": OWNER_GUARD_TRIGGER, "capture": CAPTURE_TRIGGER})
    for row in rows:
        triggers.setdefault((row.schema, row.table), {})[row.name] = TriggerInfo(
            type=int(row.type),
            enabled=row.enabled != "D",
            function=row.function,
            args=_decode_args(row.args, int(row.nargs)),
        )
    return LiveSyncState(runtime_installed=installed, catalog=catalog, triggers=triggers)


def trigger_drift(state: LiveSyncState, name: str) -> list[str]:
    """Why the triggers of registered table ``name`` differ from bootstrap's; empty if fine."""
    table_id, entry = state.catalog[name]
    expected = {
        OWNER_GUARD_TRIGGER: TriggerInfo(_GUARD_TYPE, True, OWNER_GUARD_FUNCTION, ()),
        CAPTURE_TRIGGER: TriggerInfo(
            _CAPTURE_TYPE,
            True,
            CAPTURE_FUNCTION,
            (entry.key_column, str(entry.key_kind), str(table_id)),
        ),
    }
    live = state.table_triggers(name)
    problems = []
    for trigger, want in expected.items():
        found = live.get(trigger)
        if found is None:
            problems.append(f"{trigger} is missing")
        elif found != want:
            problems.append(f"{trigger} is {found}, expected {want}")
    return problems
