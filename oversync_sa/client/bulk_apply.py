"""The SQLite half of applying a pulled bundle (CLIENT.md §7.3), in one driver hop.

:func:`apply_resolved` takes rows already decoded, keyed and collapsed per table (the pull
module's job) and writes them inside the caller's transaction: foreign keys deferred, capture
suppressed (apply mode on, then off again as the last write), per table first the
``_sync_row_state`` of every row not yet at its version (rows already at or past it are
skipped), then multi-row statements for its upserts and deletes and - only when the dirty set
is not empty - the consumed dirty rows, then the checkpoint. All of it runs
as one plain function on the driver thread (:func:`~oversync_sa.client.driver.run_on_driver`),
so a bundle costs one round trip instead of a dozen. :func:`apply_resolved_transaction` also
moves the bundle's ``BEGIN`` and ``COMMIT`` into that one hop (the pull path).

``PRAGMA defer_foreign_keys`` is a flag pragma, and SQLite expires every prepared statement of
the connection when one runs: each bundle would recompile its multi-row statements together
with the capture triggers they embed (a fifth of the apply's CPU at 1,000-row bundles). With no
foreign key anywhere in the database the pragma cannot change anything, so it is issued only
when one exists; the answer is cached per connection and schema version, which every schema
change bumps.

In WAL mode :func:`apply_resolved_transaction` commits with ``synchronous = NORMAL``, restored
right after in the same hop (not on the SQLAlchemy path used without aiosqlite): no ``fsync``
of the WAL per bundle (about 1.4 ms each on the benchmark machine's disk, a tenth of a
1,000-row bundle). A process crash still loses nothing; a power loss can only drop the newest
bundles *together with* their checkpoint, which the next pull fetches again, and the next
commit made at ``FULL`` (the connection's level for everything else) syncs the WAL up to
itself. WAL cannot be corrupted that way, and the Go reference app runs all its connections
with ``synchronous = NORMAL``.

Tables are written in the order given (first seen in the bundle); with foreign keys deferred
the order cannot fail a bundle, and upserts go before deletes within a table as before.

The idempotence check (§7.3 step 2) costs no lookup in the usual case. Row states are written
first, by statements that *claim* their keys (:func:`_row_state_sql`): a key whose state is
already at or past the new version makes the statement fail its NOT NULL constraint, and SQLite
undoes that statement alone. Only the keys of a refused statement are looked up, and their
fresh ones written; the business rows follow for the fresh keys only. A bundle's rows usually
share one version, so a row-state statement binds version and ``deleted`` once and one
``key_json`` per row. Both cut the row-state work by about half (the lookup was ``IN (...)``
over every key of the bundle, ~6 % of the pull's CPU, and three parameters per row ~5 %).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from functools import lru_cache, partial
from itertools import chain
from operator import itemgetter
from typing import Any, Final

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.client import driver
from oversync_sa.client.driver import run_on_driver
from oversync_sa.client.encoding import SqlValue, delete_sql, local_pk_to_sql, upsert_sql
from oversync_sa.client.local_schema import SYNC_TIMESTAMP_SQL
from oversync_sa.client.validation import TableInfo

__all__ = [
    "CommitRejectedError",
    "ResolvedColumns",
    "ResolvedRow",
    "ResolvedTables",
    "apply_resolved",
    "apply_resolved_transaction",
]

#: A resolved row: (local_pk, row_version, SQL values or ``None`` for a delete).
ResolvedRow = tuple[str, int, tuple[SqlValue, ...] | None]


class ResolvedColumns:
    """One table's rows as columns: distinct keys, one row version, no deletes.

    The usual bundle, handed on as the lists resolving produced instead of a
    ``key_json -> row`` mapping: no tuple and dict entry per row to build, nor to regroup.
    """

    __slots__ = ("key_jsons", "values", "version")

    def __init__(
        self, key_jsons: list[str], version: int, values: list[tuple[SqlValue, ...]]
    ) -> None:
        self.key_jsons = key_jsons
        self.version = version
        self.values = values

    @classmethod
    def of(
        cls,
        key_jsons: list[str],
        _local_pks: list[str],
        versions: list[int],
        values: list[tuple[SqlValue, ...] | None],
    ) -> ResolvedColumns | None:
        """Columns of rows in bundle order, or ``None`` unless they fit (see the class)."""
        if not versions or versions.count(versions[0]) != len(versions):
            return None
        if len(set(key_jsons)) != len(key_jsons) or not all(values):
            return None  # a key written twice, or a DELETE (values None)
        return cls(key_jsons, versions[0], values)  # type: ignore[arg-type]  # no None left


#: Per table name: its info and its rows, ``key_json -> row`` in bundle order or columns.
ResolvedTables = Mapping[str, tuple[TableInfo, Mapping[str, ResolvedRow] | ResolvedColumns]]

#: Bound parameters per ``IN (...)`` lookup; well below SQLite's default variable limit.
_IN_BATCH: Final = 500
#: Rows per multi-row statement. Every statement on a table with triggers opens a statement
#: journal and journals the pages it touches; writing rows in groups pays that once per group
#: instead of once per row (about a quarter of the apply SQL at 1,000-row bundles). Beyond
#: ~100 rows the longer statements cost more than they save.
_ROWS_PER_STATEMENT: Final = 64
_VERSION: Final = itemgetter(1)
_VALUES: Final = itemgetter(2)
#: SQLite before 3.32 binds at most 999 parameters per statement.
_MAX_PARAMETERS: Final = 999
#: Keys per row-state statement (one parameter each, five shared). Row states have no
#: triggers, so longer statements keep paying off (measured flat beyond ~300).
_ROW_STATES_PER_STATEMENT: Final = 320
_DELETE_DIRTY: Final = (
    "DELETE FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ? AND key_json = ?"
)
_SET_APPLY_MODE: Final = "UPDATE _sync_apply_state SET apply_mode = ? WHERE singleton_key = 1"
_ADVANCE: Final = (
    "UPDATE _sync_attachment_state SET last_bundle_seq_seen = MAX(last_bundle_seq_seen, ?)"
    " WHERE singleton_key = 1"
)
# One timestamp per bundle: the rows are written by one transaction anyway, and binding it
# saves SQLite a strftime per row.
_BUNDLE_FACTS: Final = (
    f"SELECT {SYNC_TIMESTAMP_SQL}, EXISTS (SELECT 1 FROM _sync_dirty_rows),"
    " (SELECT schema_version FROM pragma_schema_version)"
)
# Foreign keys cannot cross databases, so only ``main`` can hold one that involves a synced table.
_HAS_FOREIGN_KEYS: Final = (
    "SELECT EXISTS (SELECT 1 FROM main.sqlite_master AS m, pragma_foreign_key_list(m.name) AS f"
    " WHERE m.type = 'table')"
)
_SYNC_STATE: Final = (
    "SELECT s.synchronous, j.journal_mode FROM pragma_synchronous AS s, pragma_journal_mode AS j"
)
_SYNC_NORMAL: Final = 1
#: What SQLite says when a claiming :func:`_row_state_sql` meets a row state already at its version.
_STALE_CLAIM: Final = "NOT NULL constraint failed: _sync_row_state.row_version"
#: Key of the ``(schema_version, has_foreign_keys)`` pair in a connection's info cache.
_FOREIGN_KEYS_CACHE: Final = "oversync_sa_foreign_keys"
# The claim needs the NOT NULL of CLIENT.md §2; a file whose row-state table lacks it (not made
# by a client following §2) is written with a lookup first instead.
_ROW_VERSION_NOT_NULL: Final = (
    "SELECT EXISTS (SELECT 1 FROM pragma_table_info('_sync_row_state')"
    " WHERE name = 'row_version' AND \"notnull\")"
)
#: Key of the ``(schema_version, claims_possible)`` pair in a connection's info cache.
_CLAIMS_CACHE: Final = "oversync_sa_row_state_claims"

#: Per-connection memo for :func:`_apply` (SQLAlchemy's pool record ``info`` of the connection).
ConnectionCache = MutableMapping[str, Any]


class CommitRejectedError(Exception):
    """Every write of the bundle succeeded but its ``COMMIT`` failed (rolled back).

    ``error`` is the :class:`sqlalchemy.exc.DBAPIError` the ``COMMIT`` raised; with foreign
    keys deferred an :class:`~sqlalchemy.exc.IntegrityError` there is the deferred FK check.
    """

    def __init__(self, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


@lru_cache(maxsize=64)
def _row_state_sql(rows: int, claim: bool) -> str:
    """Upsert of ``rows`` row states that share version and ``deleted`` flag.

    ``?1``-``?5`` (schema, table, timestamp, row version, deleted) are bound once for the whole
    statement and each row binds only its ``key_json``: a third of the parameters of one
    ``(key_json, row_version, deleted)`` triple per row, and no tuple per row to build.

    ``claim``: the statement fails unless every one of its rows is fresh. A key whose row
    state is already at or past the new version makes ``row_version`` NULL and the NOT NULL
    constraint aborts the statement (SQLite undoes all of its rows; the transaction goes on).
    That is the idempotence check of §7.3 without looking every key up first, for the usual
    group whose rows are all new to this device.
    """
    values = ", ".join(f"(?1, ?2, ?{6 + i}, ?4, ?5, ?3)" for i in range(rows))
    version = (
        "CASE WHEN excluded.row_version > _sync_row_state.row_version THEN excluded.row_version END"
        if claim
        else "excluded.row_version"
    )
    return (
        "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version, deleted,"
        f" updated_at) VALUES {values}"
        " ON CONFLICT (schema_name, table_name, key_json) DO UPDATE SET"
        f" row_version = {version}, deleted = excluded.deleted,"
        " updated_at = excluded.updated_at"
    )


def _is_stale_claim(error: Exception) -> bool:
    """Whether ``error`` is a claiming :func:`_row_state_sql` refused by an applied row.

    Told by SQLite's message, not the class: on the SQLAlchemy path another driver may wrap it.
    """
    return _STALE_CLAIM in str(error)


def _known_versions(cursor: Any, schema: str, table: str, keys: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(keys), _IN_BATCH):
        batch = keys[start : start + _IN_BATCH]
        marks = ", ".join("?" * len(batch))
        cursor.execute(
            "SELECT key_json, row_version FROM _sync_row_state WHERE schema_name = ?"
            f" AND table_name = ? AND key_json IN ({marks})",
            (schema, table, *batch),
        )
        found.update((str(key_json), int(version)) for key_json, version in cursor.fetchall())
    return found


def _claimed(cursor: Any, sql: str, parameters: tuple[Any, ...]) -> bool:
    """Run a claiming :func:`_row_state_sql`; ``False`` if it was refused (and undone)."""
    try:
        cursor.execute(sql, parameters)
    except Exception as exc:
        if not _is_stale_claim(exc):
            raise
        return False
    return True


def _claim_group(
    cursor: Any,
    schema: str,
    table: str,
    now: str,
    group: tuple[int, int],
    keys: list[str],
    claim: bool,
) -> set[str]:
    """Write the states of ``keys`` (all at ``group`` = (version, deleted)) that are fresh;
    returns the stale ones.

    With ``claim`` each chunk is first claimed as a whole (:func:`_row_state_sql`); only a
    chunk the claim refuses (some key already applied: our own pushed rows coming back, a
    bundle pulled again) - or every chunk, without ``claim`` - looks its versions up and
    writes the states of its fresh keys alone.
    """
    version, deleted = group
    shared = (schema, table, now, version, deleted)
    stale: set[str] = set()
    step = _ROW_STATES_PER_STATEMENT
    full = _row_state_sql(step, True) if len(keys) >= step else ""
    for start in range(0, len(keys), step):
        part = keys[start : start + step]
        sql = full if len(part) == step else _row_state_sql(len(part), True)
        if claim and _claimed(cursor, sql, (*shared, *part)):
            continue
        known = _known_versions(cursor, schema, table, part)
        kept = [key for key in part if known.get(key, 0) < version]
        if kept:
            cursor.execute(_row_state_sql(len(kept), False), (*shared, *kept))
        stale.update(key for key in part if known.get(key, 0) >= version)
    return stale


def _claim_fresh(
    cursor: Any,
    schema: str,
    table: str,
    now: str,
    rows: Mapping[str, ResolvedRow],
    deletes: bool,
    claim: bool = True,
) -> Mapping[str, ResolvedRow]:
    """Write the row states of ``rows`` not yet at their version; returns those rows, in order.

    Idempotence (§7.3): a row whose state is already at (or past) its version was applied
    before and is skipped. Row states of different keys are independent, so they are written
    grouped by (version, deleted) - usually one group, a bundle's rows sharing its version.
    ``deletes``: whether any of ``rows`` is a delete; ``claim``: see :func:`_claim_group`.
    """
    versions = set(map(_VERSION, rows.values()))
    groups: dict[tuple[int, int], list[str]]
    if len(versions) == 1 and not deletes:
        groups = {(versions.pop(), 0): list(rows)}
    else:
        groups = {}
        for key_json, row in rows.items():
            groups.setdefault((row[1], int(row[2] is None)), []).append(key_json)
    stale: set[str] = set()
    for group, keys in groups.items():
        stale |= _claim_group(cursor, schema, table, now, group, keys, claim)
    if not stale:
        return rows
    return {key_json: row for key_json, row in rows.items() if key_json not in stale}


def _claim_columns(
    cursor: Any, schema: str, table: str, now: str, rows: ResolvedColumns, claim: bool
) -> tuple[list[str], list[tuple[SqlValue, ...]]]:
    """:func:`_claim_fresh` for columns: the fresh keys and their values, in order."""
    stale = _claim_group(cursor, schema, table, now, (rows.version, 0), rows.key_jsons, claim)
    if not stale:
        return rows.key_jsons, rows.values
    kept = [i for i, key_json in enumerate(rows.key_jsons) if key_json not in stale]
    return [rows.key_jsons[i] for i in kept], [rows.values[i] for i in kept]


def _write_rows(
    cursor: Any,
    sql_for: Callable[[int], str],
    rows: Sequence[Sequence[Any]],
    shared: tuple[Any, ...] = (),
) -> None:
    """Execute ``sql_for(n)`` (a statement over ``n`` rows) over ``rows``, in order.

    ``shared`` are the statement's leading parameters, bound before the rows' own.
    """
    width = max(1, len(rows[0])) if rows else 1
    step = max(1, min(_ROWS_PER_STATEMENT, (_MAX_PARAMETERS - len(shared)) // width))
    full = sql_for(step) if len(rows) >= step else ""
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        cursor.execute(
            full if len(part) == step else sql_for(len(part)), (*shared, *chain.from_iterable(part))
        )


def _defer_foreign_keys(cursor: Any, schema_version: int, cache: ConnectionCache) -> None:
    cached = cache.get(_FOREIGN_KEYS_CACHE)
    if cached is None or cached[0] != schema_version:
        cursor.execute(_HAS_FOREIGN_KEYS)
        cached = cache[_FOREIGN_KEYS_CACHE] = (schema_version, bool(cursor.fetchone()[0]))
    if cached[1]:
        cursor.execute("PRAGMA defer_foreign_keys = ON")


def _claims_possible(cursor: Any, schema_version: int, cache: ConnectionCache) -> bool:
    cached = cache.get(_CLAIMS_CACHE)
    if cached is None or cached[0] != schema_version:
        cursor.execute(_ROW_VERSION_NOT_NULL)
        cached = cache[_CLAIMS_CACHE] = (schema_version, bool(cursor.fetchone()[0]))
    return bool(cached[1])


def _apply(
    cursor: Any, schema: str, tables: ResolvedTables, bundle_seq: int, cache: ConnectionCache
) -> int:
    cursor.execute(_SET_APPLY_MODE, (1,))
    cursor.execute(_BUNDLE_FACTS)
    now, has_dirty, schema_version = cursor.fetchone()
    # Before the first write that a foreign key could involve.
    _defer_foreign_keys(cursor, int(schema_version), cache)
    claim = _claims_possible(cursor, int(schema_version), cache)
    written = 0
    for table, (info, rows) in tables.items():
        keys: Sequence[str]
        removed: list[tuple[SqlValue]] = []
        if isinstance(rows, ResolvedColumns):
            keys, upserts = _claim_columns(cursor, schema, table, now, rows, claim)
        else:
            deletes = not all(map(_VALUES, rows.values()))
            fresh = _claim_fresh(cursor, schema, table, now, rows, deletes, claim)
            keys = list(fresh)
            if deletes:
                upserts = [row[2] for row in fresh.values() if row[2] is not None]
                removed = [
                    (local_pk_to_sql(info, row[0]),) for row in fresh.values() if row[2] is None
                ]
            else:
                upserts = list(map(_VALUES, fresh.values()))
        if upserts:
            _write_rows(cursor, partial(upsert_sql, info), upserts)
        if removed:
            _write_rows(cursor, partial(delete_sql, info), removed)
        if has_dirty and keys:
            cursor.executemany(_DELETE_DIRTY, [(schema, table, key_json) for key_json in keys])
        written += len(keys)
    cursor.execute(_ADVANCE, (bundle_seq,))
    cursor.execute(_SET_APPLY_MODE, (0,))
    return written


async def _connection_cache(conn: AsyncConnection) -> ConnectionCache:
    info: ConnectionCache = (await conn.get_raw_connection()).info
    return info


async def apply_resolved(
    conn: AsyncConnection, schema: str, tables: ResolvedTables, bundle_seq: int
) -> int:
    """Write one resolved bundle and move the checkpoint to ``bundle_seq`` (caller's tx).

    Returns how many rows were written (rows already at or past their version are skipped).
    On an error nothing is undone here: the caller's transaction rollback discards the partial
    writes and ``apply_mode = 1`` together.
    """
    cache = await _connection_cache(conn)
    return await run_on_driver(
        conn, lambda cursor: _apply(cursor, schema, tables, bundle_seq, cache)
    )


def _rollback(connection: sqlite3.Connection) -> None:
    # Best effort: if even ROLLBACK fails, the pool's reset-on-return rolls back again.
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK").close()


def _transaction(
    connection: sqlite3.Connection,
    schema: str,
    tables: ResolvedTables,
    bundle_seq: int,
    cache: ConnectionCache,
    before_commit: Callable[[], None],
) -> tuple[int, sqlite3.Error | None]:
    """``BEGIN``, :func:`_apply`, ``before_commit()``, ``COMMIT`` on the driver thread.

    A failing write raises (after ROLLBACK); a failing COMMIT is returned instead, so that the
    caller can tell the two apart.
    """
    cursor = connection.cursor()
    restore: int | None = None
    try:
        # Outside the transaction: SQLite refuses to change the safety level inside one.
        cursor.execute(_SYNC_STATE)
        level, journal_mode = cursor.fetchone()
        if int(level) > _SYNC_NORMAL and journal_mode == "wal":
            cursor.execute(f"PRAGMA synchronous = {_SYNC_NORMAL}")
            restore = int(level)
        cursor.execute("BEGIN")
        try:
            written = _apply(cursor, schema, tables, bundle_seq, cache)
            before_commit()
        except BaseException:
            _rollback(connection)
            raise
        try:
            cursor.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(connection)
            return written, exc
        return written, None
    finally:
        try:
            if restore is not None:
                _rollback(connection)  # a no-op unless an earlier ROLLBACK failed
                cursor.execute(f"PRAGMA synchronous = {restore}")
        finally:
            cursor.close()


async def apply_resolved_transaction(
    conn: AsyncConnection,
    schema: str,
    tables: ResolvedTables,
    bundle_seq: int,
    before_commit: Callable[[], None] = lambda: None,
) -> int:
    """:func:`apply_resolved` in a transaction of its own, ``BEGIN`` to ``COMMIT`` in one hop.

    ``conn`` must not be in a transaction; ``before_commit`` runs after the last write, inside
    the transaction (on the driver thread). A failing write raises the
    :class:`~sqlalchemy.exc.DBAPIError` :func:`apply_resolved` would; a failing ``COMMIT``
    raises :class:`CommitRejectedError` from it. Either way the transaction is rolled back.
    Without aiosqlite the transaction is SQLAlchemy's, with the same results.
    """
    raw = await conn.get_raw_connection()
    cache: ConnectionCache = raw.info
    # Looked up on the module so that tests can force the SQLAlchemy path.
    found = driver.worker_submitter(raw.driver_connection)
    base_error: type[Exception] = conn.dialect.loaded_dbapi.Error
    if found is None:
        written: int | None = None
        try:
            async with conn.begin():
                written = await apply_resolved(conn, schema, tables, bundle_seq)
                before_commit()
        except DBAPIError as exc:
            if written is None:
                raise
            raise CommitRejectedError(exc) from exc
        return written
    submit, connection = found
    try:
        written, commit_error = await submit(
            _transaction, connection, schema, tables, bundle_seq, cache, before_commit
        )
    except base_error as exc:
        raise DBAPIError.instance(None, None, exc, base_error) from exc
    if commit_error is not None:
        error = DBAPIError.instance("COMMIT", None, commit_error, base_error)
        error.__cause__ = commit_error
        raise CommitRejectedError(error) from error
    return written
