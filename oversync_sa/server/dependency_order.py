"""Parent-first ordering of registered tables (SERVER.md §2.4, bootstrap step 3).

Tarjan's strongly-connected components collapse FK cycles; Kahn's algorithm then orders the
components, breaking ties by the smallest member name so the result is deterministic. The
runtime only logs the order (push applies rows in upload order), so it is diagnostics.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

__all__ = ["dependency_order", "normalize_table_key"]


def normalize_table_key(raw: str) -> str | None:
    """``"schema.table"`` or ``"table"`` (→ ``public``) lower-cased; None when malformed."""
    parts = raw.strip().lower().split(".")
    if len(parts) == 1:
        parts = ["public", parts[0]]
    if len(parts) != 2 or not all(parts):
        return None
    return f"{parts[0]}.{parts[1]}"


def _strongly_connected(
    nodes: list[str], parents: Mapping[str, set[str]]
) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for parent in sorted(parents.get(node, ())):
            if parent not in index:
                visit(parent)
                low[node] = min(low[node], low[parent])
            elif parent in on_stack:
                low[node] = min(low[node], index[parent])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return components


def dependency_order(
    tables: Iterable[str],
    edges: Mapping[str, Iterable[str]],
    overrides: Mapping[str, Iterable[str]] | None = None,
) -> tuple[str, ...]:
    """Order ``tables`` so that parents come before children.

    ``edges`` maps a child ``"schema.table"`` to its parents; ``overrides`` adds edges in the
    Go ``DependencyOverrides`` form (bare names mean ``public``). Self edges and names that are
    not in ``tables`` are ignored. Members of a cycle are emitted together, sorted by name.
    """
    nodes = sorted(set(tables))
    known = set(nodes)
    parents: dict[str, set[str]] = {n: set() for n in nodes}
    merged: list[tuple[str, Iterable[str]]] = list(edges.items())
    merged.extend((overrides or {}).items())
    for raw_child, raw_parents in merged:
        child = normalize_table_key(raw_child)
        if child not in known or child is None:
            continue
        for raw_parent in raw_parents:
            parent = normalize_table_key(raw_parent)
            if parent is not None and parent in known and parent != child:
                parents[child].add(parent)

    components = _strongly_connected(nodes, parents)
    owner = {member: i for i, comp in enumerate(components) for member in comp}
    waiting_on: list[set[int]] = [set() for _ in components]
    dependents: list[set[int]] = [set() for _ in components]
    for child, child_parents in parents.items():
        for parent in child_parents:
            c, p = owner[child], owner[parent]
            if c != p:
                waiting_on[c].add(p)
                dependents[p].add(c)

    ready = [(comp[0], i) for i, comp in enumerate(components) if not waiting_on[i]]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, i = heapq.heappop(ready)
        order.extend(components[i])
        for d in dependents[i]:
            waiting_on[d].discard(i)
            if not waiting_on[d]:
                heapq.heappush(ready, (components[d][0], d))
    return tuple(order)
