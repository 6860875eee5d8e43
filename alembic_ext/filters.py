"""``include_name`` / ``include_object`` hooks hiding the ``sync`` schema from autogenerate.

The ``sync.*`` tables belong to the runtime (SERVER.md §1) and are created, refreshed and
dropped only by the sync operations; Alembic must neither diff nor drop them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from oversync_sa.server.runtime_schema import SYNC_SCHEMA

__all__ = ["IncludeName", "IncludeObject", "include_name", "include_object", "schema_filter"]

IncludeName = Callable[[str | None, str, Mapping[str, str | None]], bool]
IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]


def include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Reject the ``sync`` schema and anything inside it."""
    if type_ == "schema":
        return name != SYNC_SCHEMA
    return parent_names.get("schema_name") != SYNC_SCHEMA


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Reject objects of the ``sync`` schema (they can be reached through reflection)."""
    table = getattr(obj, "table", obj) if type_ != "table" else obj
    return getattr(table, "schema", None) != SYNC_SCHEMA


def schema_filter(
    schemas: Iterable[str | None], user_filter: IncludeName | None = None
) -> IncludeName:
    """``include_name`` limited to ``schemas`` (``None`` = default), chained to ``user_filter``.

    With ``include_schemas=True`` autogenerate otherwise compares every schema in the
    database and proposes dropping tables of schemas the metadata does not describe.
    """
    allowed = set(schemas) | {None}

    def _include(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
        if not include_name(name, type_, parent_names):
            return False
        if type_ == "schema" and name not in allowed:
            return False
        return user_filter(name, type_, parent_names) if user_filter else True

    return _include
