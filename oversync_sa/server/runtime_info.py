"""What bootstrap learned about the registered tables, kept for the life of the service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from oversync_sa.server.runtime_schema import SYNC_KEY_KIND_TEXT, SYNC_KEY_KIND_UUID

__all__ = ["KeyType", "RuntimeTable", "SyncRuntime", "key_kind_for", "quote_ident"]

KeyType = Literal["uuid", "text"]


def key_kind_for(key_type: KeyType) -> int:
    """The ``sync_key_kind`` code (§1.1) of a key column type."""
    return SYNC_KEY_KIND_UUID if key_type == "uuid" else SYNC_KEY_KIND_TEXT


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class RuntimeTable:
    """One registered table as the runtime addresses it (§2.2 "runtime info per table")."""

    schema: str
    table: str
    key_column: str
    key_type: KeyType
    table_id: int

    @property
    def name(self) -> str:
        """The ``"schema.table"`` key used in configuration, catalog and wire."""
        return f"{self.schema}.{self.table}"

    @property
    def sql_name(self) -> str:
        """The quoted ``"schema"."table"`` name used in generated SQL."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"

    @property
    def key_kind(self) -> int:
        return key_kind_for(self.key_type)


@dataclass(frozen=True, slots=True)
class SyncRuntime:
    """Immutable runtime topology produced by a successful bootstrap.

    ``column_types`` maps ``"schema.table"`` to ``{column: udt_name}`` (lower-cased), the §2.2
    column map the payload code needs to treat ``bytea`` columns specially.
    ``dependency_order`` is the informational parent-first order of §2.4.
    """

    tables: tuple[RuntimeTable, ...]
    column_types: Mapping[str, Mapping[str, str]]
    dependency_order: tuple[str, ...] = ()
    _by_id: Mapping[int, RuntimeTable] = field(init=False, repr=False, compare=False)
    _by_name: Mapping[str, RuntimeTable] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {t.table_id: t for t in self.tables})
        object.__setattr__(self, "_by_name", {t.name: t for t in self.tables})

    @property
    def by_id(self) -> Mapping[int, RuntimeTable]:
        return self._by_id

    @property
    def by_name(self) -> Mapping[str, RuntimeTable]:
        return self._by_name

    def table(self, name: str) -> RuntimeTable:
        """Look a table up by ``"schema.table"``; raises ``KeyError`` when not registered."""
        return self._by_name[name]
