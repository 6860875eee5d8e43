"""The introspectable set of synced tables of one metadata, and their dependency order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa

from oversync_sa.errors import ConfigurationError, SchemaViolation, UnsupportedSchemaError
from oversync_sa.metadata._inspect import KeyKind, foreign_keys, key_kind
from oversync_sa.metadata._rules import link_violations, table_violations
from oversync_sa.metadata.registration import SyncRegistration, registration_of

__all__ = ["SyncRegistry", "SyncedTableInfo", "metadata_of", "sync_registry"]


@dataclass(frozen=True, slots=True)
class SyncedTableInfo:
    """One synced table as seen by the rest of the library.

    ``table`` is the declared (logical) table; ``parents`` are the other synced tables it
    references by FK, in FK-name order, self-references excluded.
    """

    name: str
    key_column: str
    key_kind: KeyKind
    table: sa.Table
    parents: tuple[str, ...]
    download_only: bool
    registration: SyncRegistration


@dataclass(frozen=True, slots=True)
class SyncRegistry:
    """The synced tables of a metadata, keyed by lower-case name in declaration order."""

    metadata: sa.MetaData
    tables: Mapping[str, SyncedTableInfo]

    def __iter__(self) -> Iterator[SyncedTableInfo]:
        return iter(self.tables.values())

    def __len__(self) -> int:
        return len(self.tables)

    def dependency_order(self) -> list[str]:
        """Table names with every parent before its children.

        FK cycles are collapsed into strongly connected components; components are emitted
        in topological order, ready ones by their earliest declaration, and the members of a
        cycle in declaration order. The result depends only on the declarations.
        """
        return _dependency_order(self.tables)


def metadata_of(source: Any) -> sa.MetaData:
    """The ``MetaData`` of a declarative base (or model) class, or ``source`` itself."""
    if isinstance(source, sa.MetaData):
        return source
    metadata = getattr(source, "metadata", None)
    if isinstance(metadata, sa.MetaData):
        return metadata
    raise ConfigurationError(
        f"expected a declarative base class or a MetaData, got {source!r}"
    )


def sync_registry(source: Any) -> SyncRegistry:
    """Validate and describe the synced tables of a declarative base or a ``MetaData``.

    Raises :class:`UnsupportedSchemaError` listing every violation of every synced table
    (including FK rules that span tables). Unsynced tables of the metadata are ignored unless
    a synced table references them.
    """
    metadata = metadata_of(source)
    marked = [
        (table, reg)
        for table in metadata.tables.values()
        if (reg := registration_of(table)) is not None
    ]
    keys = {table: reg.key_column for table, reg in marked}
    violations: list[SchemaViolation] = []
    for table, reg in marked:
        # Mixed-case names are rejected here, so lower-cased names cannot collide.
        violations += table_violations(table, reg.key_column, reg.model)
        violations += link_violations(table, reg.model, keys)
    if violations:
        raise UnsupportedSchemaError(violations)

    infos: dict[str, SyncedTableInfo] = {}
    for table, reg in marked:
        kind = key_kind(table.c[reg.key_column].type)
        assert kind is not None  # guaranteed by table_violations
        parents = tuple(
            dict.fromkeys(
                ref.parent_table.name.lower()
                for ref in foreign_keys(table)
                if ref.parent_table is not None and ref.parent_table is not table
            )
        )
        infos[table.name.lower()] = SyncedTableInfo(
            name=table.name.lower(),
            key_column=reg.key_column,
            key_kind=kind,
            table=table,
            parents=parents,
            download_only=reg.download_only,
            registration=reg,
        )
    return SyncRegistry(metadata=metadata, tables=MappingProxyType(infos))


def _dependency_order(tables: Mapping[str, SyncedTableInfo]) -> list[str]:
    position = {name: i for i, name in enumerate(tables)}
    components = _strongly_connected(tables)
    component_of = {name: idx for idx, members in enumerate(components) for name in members}
    # Edges parent-component -> child-component, deduplicated.
    children: dict[int, set[int]] = {i: set() for i in range(len(components))}
    indegree = dict.fromkeys(range(len(components)), 0)
    for name, info in tables.items():
        for parent in info.parents:
            src, dst = component_of[parent], component_of[name]
            if src != dst and dst not in children[src]:
                children[src].add(dst)
                indegree[dst] += 1

    def first(idx: int) -> int:
        return min(position[m] for m in components[idx])

    ready = sorted((i for i, d in indegree.items() if d == 0), key=first)
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order += sorted(components[current], key=position.__getitem__)
        for child in children[current]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
        ready.sort(key=first)
    return order


def _strongly_connected(tables: Mapping[str, SyncedTableInfo]) -> list[list[str]]:
    """Tarjan's algorithm over child -> parent edges (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for root in tables:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(tables[root].parents))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(tables[nxt].parents)))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                result.append(members)
    return result
