"""Move ``sync.table_catalog`` to a new registered-table set without dropping the ``sync`` schema.

Bootstrap is sticky (SERVER.md §2.3, §11.19): ``table_id`` is the 1-based position of
``"schema.table"`` in byte-wise sorted order, so registering or unregistering one table can shift
the ids of others, and a catalog that differs from the configuration fails bootstrap. Schema
migrations (Alembic) need to change the registered set in place; this module does that in the
caller's transaction, under the bootstrap advisory lock.

Why renumbering is safe: ``table_id`` never leaves the database (§11.33). The wire names tables by
``schema``/``table``, bundle hashes cover names and payloads (§3.5), and the only holders of ids
are the ``sync.*`` tables rewritten here and the capture-trigger arguments reinstalled here. A
*running* service caches ids in its runtime, so every sync service must be restarted (which
re-bootstraps) after a catalog change — the same restart-only topology rule as §2.5.

What happens to the data:

* retained tables: every ``table_id`` reference (``row_state``, ``bundle_rows``,
  ``bundle_capture_stage``, ``push_session_rows``, ``snapshot_session_rows``) is moved to the new
  id, and the capture triggers are reinstalled with it;
* dropped tables: their ``row_state`` rows go; in-flight push and snapshot sessions holding their
  rows are dropped (clients retry them); committed history that mentions them is *pruned* — per
  user, ``retained_bundle_floor`` is raised to the newest bundle holding such a row and the
  bundles up to it are deleted. Editing committed bundles would change rows behind their
  ``row_count``/``bundle_hash``; pruning is the contract's own mechanism, and clients behind the
  floor receive ``history_pruned`` and re-snapshot (§7.1);
* a retained table whose sync key column or kind changed is refused: its ``row_state`` keys would
  no longer describe its rows.

Foreign keys from the ``sync`` tables to the catalog are plain ``NO ACTION``, so ids are moved in
two hops through a temporary id range above every old and new id; the constraints stay enforced
throughout and keep their names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.errors import SchemaViolation, UnsupportedSchemaError
from oversync_sa.server.runtime_info import KeyType, RuntimeTable, quote_ident
from oversync_sa.server.runtime_schema import (
    ADVISORY_LOCK_KEY,
    BUNDLE_CAPTURE_STAGE,
    BUNDLE_LOG,
    BUNDLE_ROWS,
    PUSH_SESSION_ROWS,
    PUSH_SESSIONS,
    ROW_STATE,
    SNAPSHOT_SESSION_ROWS,
    SNAPSHOT_SESSIONS,
    SYNC_KEY_KIND_UUID,
    TABLE_CATALOG,
    USER_STATE,
)
from oversync_sa.server.triggers import CAPTURE_TRIGGER, OWNER_GUARD_TRIGGER, trigger_ddl

__all__ = [
    "CatalogChange",
    "CatalogEntry",
    "CatalogPlan",
    "apply_catalog_migration",
    "drop_sync_triggers",
    "migrate_table_catalog",
    "plan_catalog_migration",
    "prune_reshaped_history",
    "read_catalog",
]

_log = logging.getLogger("oversync_sa.server.catalog_migration")

#: Every ``sync`` table holding a ``table_id`` reference to the catalog.
_REFERENCING: Final = (
    ROW_STATE,
    BUNDLE_ROWS,
    BUNDLE_CAPTURE_STAGE,
    PUSH_SESSION_ROWS,
    SNAPSHOT_SESSION_ROWS,
)
#: Temporary catalog rows use this (never registered, §2.1 maps "" to "public") schema name.
_PARKING_SCHEMA: Final = ""


@dataclass(frozen=True, slots=True, order=True)
class CatalogEntry:
    """One registered table as ``sync.table_catalog`` records it, minus the positional id."""

    schema: str
    table: str
    key_column: str
    key_kind: int

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def key_type(self) -> KeyType:
        return "uuid" if self.key_kind == SYNC_KEY_KIND_UUID else "text"

    @classmethod
    def of(cls, table: RuntimeTable) -> CatalogEntry:
        return cls(table.schema, table.table, table.key_column, table.key_kind)

    def runtime(self, table_id: int) -> RuntimeTable:
        return RuntimeTable(self.schema, self.table, self.key_column, self.key_type, table_id)


@dataclass(frozen=True, slots=True)
class CatalogPlan:
    """The id assignment before and after, derived only from names (no database access)."""

    old_ids: Mapping[str, int]
    new_ids: Mapping[str, int]
    entries: Mapping[str, CatalogEntry]

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(n for n in self.new_ids if n not in self.old_ids)

    @property
    def removed(self) -> tuple[str, ...]:
        return tuple(n for n in self.old_ids if n not in self.new_ids)

    @property
    def moved(self) -> dict[str, tuple[int, int]]:
        """Retained tables whose id changes: ``name -> (old_id, new_id)``."""
        return {
            n: (old, self.new_ids[n])
            for n, old in self.old_ids.items()
            if n in self.new_ids and self.new_ids[n] != old
        }

    @property
    def is_noop(self) -> bool:
        return not (self.added or self.removed or self.moved)


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """What :func:`apply_catalog_migration` did; ``pruned_to`` maps ``user_pk`` to its new floor."""

    plan: CatalogPlan
    pruned_to: Mapping[int, int] = field(default_factory=dict)
    tables: tuple[RuntimeTable, ...] = ()

    @property
    def changed(self) -> bool:
        return not self.plan.is_noop


def _sorted_ids(names: Iterable[str]) -> dict[str, int]:
    ordered = sorted(set(names), key=lambda n: n.encode("utf-8"))
    return {name: i for i, name in enumerate(ordered, start=1)}


def plan_catalog_migration(
    current: Mapping[int, CatalogEntry], target: Iterable[CatalogEntry]
) -> CatalogPlan:
    """Compare the stored catalog (``table_id -> entry``) with the wanted registered set.

    Raises :class:`UnsupportedSchemaError` when a retained table changes its sync key or kind,
    or when ``target`` names a table twice.
    """
    wanted: dict[str, CatalogEntry] = {}
    for entry in target:
        if entry.name in wanted:
            raise _violation(entry.name, "catalog_duplicate", f"{entry.name} is listed twice")
        wanted[entry.name] = entry
    old = {entry.name: table_id for table_id, entry in current.items()}
    stored = {entry.name: entry for entry in current.values()}
    for name, entry in wanted.items():
        before = stored.get(name)
        if before is not None and before != entry:
            raise _violation(
                name,
                "catalog_key_change",
                f"sync key of {name} changed from {before.key_column} (kind {before.key_kind}) "
                f"to {entry.key_column} (kind {entry.key_kind}); its sync row state would no "
                "longer match its rows, so the change is not migrated in place",
            )
    return CatalogPlan(old_ids=old, new_ids=_sorted_ids(wanted), entries={**stored, **wanted})


def _violation(table: str, rule: str, message: str) -> UnsupportedSchemaError:
    return UnsupportedSchemaError([SchemaViolation(table=table, rule=rule, message=message)])


def read_catalog(conn: Connection) -> dict[int, CatalogEntry]:
    """``sync.table_catalog`` as ``table_id -> entry``; the layout must exist."""
    rows = conn.execute(sa.select(TABLE_CATALOG).order_by(TABLE_CATALOG.c.table_id)).all()
    return {
        row.table_id: CatalogEntry(
            row.schema_name, row.table_name, row.sync_key_column, row.sync_key_kind
        )
        for row in rows
    }


def apply_catalog_migration(
    conn: Connection, target: Iterable[CatalogEntry], *, reinstall_triggers: bool = True
) -> CatalogChange:
    """Make ``sync.table_catalog`` hold exactly ``target``, in the caller's transaction.

    Takes the bootstrap advisory lock first. With ``reinstall_triggers`` the capture triggers of
    moved tables are reinstalled with their new id, and the triggers of removed tables that still
    exist are dropped; triggers of *added* tables are left to the caller (the table is new to
    sync and may need validating first).
    """
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
    plan = plan_catalog_migration(read_catalog(conn), target)
    if plan.is_noop:
        return CatalogChange(plan=plan, tables=_final_tables(plan))
    removed_ids = [plan.old_ids[n] for n in plan.removed]
    pruned = _forget_tables(conn, removed_ids) if removed_ids else {}
    _renumber(conn, plan)
    if reinstall_triggers:
        _refresh_triggers(conn, plan)
    change = CatalogChange(plan=plan, pruned_to=pruned, tables=_final_tables(plan))
    _log.info(
        "sync catalog migrated: added %s, removed %s, renumbered %s, pruned history of %d user(s)",
        list(plan.added),
        list(plan.removed),
        plan.moved,
        len(pruned),
    )
    return change


def _final_tables(plan: CatalogPlan) -> tuple[RuntimeTable, ...]:
    return tuple(plan.entries[n].runtime(i) for n, i in plan.new_ids.items())


def _forget_tables(conn: Connection, table_ids: Sequence[int]) -> dict[int, int]:
    """Drop every trace of ``table_ids`` except the catalog rows; returns pruned floors."""
    for sessions, rows, key in (
        (PUSH_SESSIONS, PUSH_SESSION_ROWS, "push_id"),
        (SNAPSHOT_SESSIONS, SNAPSHOT_SESSION_ROWS, "snapshot_id"),
    ):
        holding = sa.select(rows.c[key]).where(rows.c.table_id.in_(table_ids))
        conn.execute(sa.delete(sessions).where(sessions.c[key].in_(holding)))
    conn.execute(sa.delete(ROW_STATE).where(ROW_STATE.c.table_id.in_(table_ids)))
    conn.execute(
        sa.delete(BUNDLE_CAPTURE_STAGE).where(BUNDLE_CAPTURE_STAGE.c.table_id.in_(table_ids))
    )
    return _prune_through(conn, BUNDLE_ROWS.c.table_id.in_(table_ids))


def _prune_through(conn: Connection, mentions: sa.ColumnElement[bool]) -> dict[int, int]:
    """Per user, delete the bundles up to the newest one with a row matching ``mentions`` and
    raise ``retained_bundle_floor`` to it; returns ``user_pk -> floor``."""
    floors = conn.execute(
        sa.select(BUNDLE_ROWS.c.user_pk, sa.func.max(BUNDLE_ROWS.c.bundle_seq))
        .where(mentions)
        .group_by(BUNDLE_ROWS.c.user_pk)
    ).all()
    pruned = {int(user_pk): int(floor) for user_pk, floor in floors}
    for user_pk, floor in pruned.items():
        # bundle_rows follow their bundle_log row (ON DELETE CASCADE)
        conn.execute(
            sa.delete(BUNDLE_LOG).where(
                BUNDLE_LOG.c.user_pk == user_pk, BUNDLE_LOG.c.bundle_seq <= floor
            )
        )
        conn.execute(
            sa.update(USER_STATE)
            .where(USER_STATE.c.user_pk == user_pk)
            .values(
                retained_bundle_floor=sa.func.greatest(USER_STATE.c.retained_bundle_floor, floor)
            )
        )
    return pruned


def prune_reshaped_history(
    conn: Connection, table_id: int, columns: Iterable[str]
) -> dict[int, int]:
    """Prune committed history whose rows of ``table_id`` do not carry exactly ``columns``.

    Run after a column of a registered table was added, dropped or renamed. Clients apply a
    bundle row only when its payload carries exactly their table's columns, so a client that is
    behind would be stuck on rows captured with the old column set, whichever models it runs;
    rewriting them would break their bundles' ``row_count``/``bundle_hash``. Pruning them (like a
    removed table's history) sends such clients to ``history_pruned`` and a snapshot, which is
    read from the live rows (a client exactly at the floor re-snapshots too, §6.2). Snapshot
    sessions holding rows of the table are dropped for the same reason (clients start anew).
    ``columns`` are the wire columns (without the hidden scope column); returns
    ``user_pk -> new floor``.
    """
    text_array = postgresql.ARRAY(sa.Text)
    wanted = sa.cast(sorted(set(columns)), text_array)
    keys = sa.func.array(
        sa.select(sa.column("k", sa.Text))
        .select_from(sa.func.json_object_keys(BUNDLE_ROWS.c.payload_wire).alias("k"))
        .scalar_subquery(),
        type_=text_array,
    )
    reshaped = sa.and_(
        BUNDLE_ROWS.c.table_id == table_id,
        BUNDLE_ROWS.c.payload_wire.is_not(None),  # deletes carry no payload
        sa.not_(sa.and_(keys.contains(wanted), keys.contained_by(wanted))),
    )
    holding = sa.select(SNAPSHOT_SESSION_ROWS.c.snapshot_id).where(
        SNAPSHOT_SESSION_ROWS.c.table_id == table_id
    )
    conn.execute(sa.delete(SNAPSHOT_SESSIONS).where(SNAPSHOT_SESSIONS.c.snapshot_id.in_(holding)))
    pruned = _prune_through(conn, reshaped)
    if pruned:
        _log.info(
            "pruned history of %d user(s) holding rows of table %d with another column set",
            len(pruned), table_id,
        )
    return pruned


def _repoint(conn: Connection, old_id: int, new_id: int) -> None:
    for table in _REFERENCING:
        conn.execute(sa.update(table).where(table.c.table_id == old_id).values(table_id=new_id))


def _renumber(conn: Connection, plan: CatalogPlan) -> None:
    moved = plan.moved
    all_ids = [*plan.old_ids.values(), *plan.new_ids.values()]
    offset = max(all_ids, default=0)
    # Hop 1: park moved rows' references on temporary catalog rows (id above every real id).
    for name, (old_id, new_id) in moved.items():
        conn.execute(
            sa.insert(TABLE_CATALOG).values(
                _catalog_values(plan.entries[name], new_id + offset, parked=True)
            )
        )
        _repoint(conn, old_id, new_id + offset)
    stale = [plan.old_ids[n] for n in (*moved, *plan.removed)]
    if stale:
        conn.execute(sa.delete(TABLE_CATALOG).where(TABLE_CATALOG.c.table_id.in_(stale)))
    # Hop 2: final rows for moved and added tables, then unpark.
    for name in (*moved, *plan.added):
        conn.execute(
            sa.insert(TABLE_CATALOG).values(
                _catalog_values(plan.entries[name], plan.new_ids[name], parked=False)
            )
        )
    for _, new_id in moved.values():
        _repoint(conn, new_id + offset, new_id)
    if moved:
        parked = [new_id + offset for _, new_id in moved.values()]
        conn.execute(sa.delete(TABLE_CATALOG).where(TABLE_CATALOG.c.table_id.in_(parked)))


def _catalog_values(entry: CatalogEntry, table_id: int, *, parked: bool) -> dict[str, object]:
    return {
        "table_id": table_id,
        "schema_name": _PARKING_SCHEMA if parked else entry.schema,
        "table_name": f"parked:{table_id}" if parked else entry.table,
        "sync_key_column": entry.key_column,
        "sync_key_kind": entry.key_kind,
    }


def _refresh_triggers(conn: Connection, plan: CatalogPlan) -> None:
    for name in plan.moved:
        for statement in trigger_ddl(plan.entries[name].runtime(plan.new_ids[name])):
            conn.execute(sa.text(statement))
    for name in plan.removed:
        drop_sync_triggers(conn, plan.entries[name].schema, plan.entries[name].table)


def drop_sync_triggers(conn: Connection, schema: str, table: str) -> None:
    """Remove both sync triggers from ``schema.table``; a missing table is not an error."""
    target = f"{quote_ident(schema)}.{quote_ident(table)}"
    exists = conn.scalar(sa.select(sa.func.to_regclass(target).is_not(None)))
    if not exists:
        return
    for trigger in (CAPTURE_TRIGGER, OWNER_GUARD_TRIGGER):
        conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {trigger} ON {target}"))


async def migrate_table_catalog(
    conn: AsyncConnection, tables: Sequence[RuntimeTable]
) -> CatalogChange | None:
    """Opt-in bootstrap hook: move an existing catalog to ``tables`` before it is verified.

    Returns ``None`` when the ``sync`` layout does not exist yet (bootstrap creates it). The
    ``table_id`` of ``tables`` is ignored; the sorted assignment is recomputed. Run it inside the
    bootstrap layout transaction, before ``ensure_layout``.
    """

    def _run(sync_conn: Connection) -> CatalogChange | None:
        has_layout = sync_conn.scalar(
            sa.text(
                "SELECT to_regclass('sync.meta') IS NOT NULL"
                " AND to_regclass('sync.table_catalog') IS NOT NULL"
            )
        )
        if not has_layout:
            return None
        return apply_catalog_migration(sync_conn, [CatalogEntry.of(t) for t in tables])

    return await conn.run_sync(_run)
