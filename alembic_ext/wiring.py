"""What ``env.py`` calls: the target metadata and the ``context.configure`` options.

Typical ``env.py``::

    import alembic_ext
    from myapp.models import Base

    target_metadata = alembic_ext.target_metadata(Base, schema="business")
    ...
    context.configure(
        connection=connection, **alembic_ext.context_options(target_metadata)
    )

:func:`target_metadata` takes the SyncedBase (or its MetaData) and returns the *server
projection*; passing ``Base.metadata`` itself to Alembic would create schema-less tables without
``_sync_scope_id``. Unsynced tables can be added by passing a list of MetaData to
:func:`context_options` and ``context.configure``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext

from alembic_ext.filters import IncludeName, IncludeObject, include_object, schema_filter
from alembic_ext.render import render_item as sync_render_item
from oversync_sa.metadata import server_projection

__all__ = ["DEFAULT_PLUGINS", "context_options", "enable_sync_autogenerate", "target_metadata"]

#: Alembic's own default ``autogenerate_plugins``.
DEFAULT_PLUGINS: tuple[str, ...] = ("alembic.autogenerate.*",)

RenderItem = Callable[[str, Any, AutogenContext], "str | Literal[False]"]

_legacy_registered = False


def target_metadata(base_or_metadata: Any, *, schema: str = "business") -> sa.MetaData:
    """The server projection of the synced models: what PostgreSQL should contain."""
    return server_projection(base_or_metadata, schema=schema)


def enable_sync_autogenerate() -> str | None:
    """Register the sync comparator; returns the plugin name (``None`` on Alembic < 1.18)."""
    try:
        from alembic_ext.plugin import ensure_plugin
    except ImportError:  # Alembic < 1.18: no plugin registry
        _register_legacy_comparator()
        return None
    return ensure_plugin()


def _register_legacy_comparator() -> None:
    global _legacy_registered
    if _legacy_registered:
        return
    from alembic.autogenerate import comparators

    from alembic_ext.compare import compare_sync_state

    comparators.dispatch_for("schema")(compare_sync_state)
    _legacy_registered = True


def _schemas(metadata: sa.MetaData | Sequence[sa.MetaData]) -> set[str | None]:
    items = [metadata] if isinstance(metadata, sa.MetaData) else list(metadata)
    return {table.schema for md in items for table in md.tables.values()}


def _chain_objects(user_filter: IncludeObject | None) -> IncludeObject:
    def _include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if not include_object(obj, name, type_, reflected, compare_to):
            return False
        return user_filter(obj, name, type_, reflected, compare_to) if user_filter else True

    return _include


def _chain_render(user_hook: RenderItem | None) -> RenderItem:
    def _render(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
        rendered = sync_render_item(type_, obj, autogen_context)
        if rendered is False and user_hook is not None:
            return user_hook(type_, obj, autogen_context)
        return rendered

    return _render


def context_options(
    metadata: sa.MetaData | Sequence[sa.MetaData],
    *,
    include_name: IncludeName | None = None,
    include_object: IncludeObject | None = None,
    render_item: RenderItem | None = None,
    autogenerate_plugins: Sequence[str] = DEFAULT_PLUGINS,
    **other: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``context.configure`` that enable sync-aware autogenerate.

    * ``target_metadata=metadata`` and ``include_schemas=True`` (synced tables live in their
      own schema);
    * ``include_name`` limited to the metadata's schemas and hiding ``sync``, chained with
      yours; ``include_object`` likewise;
    * ``render_item`` writing oversync column types as generic SQLAlchemy types, falling back
      to yours;
    * ``autogenerate_plugins`` extended with the sync plugin (Alembic ≥ 1.18).

    ``other`` is passed through unchanged (e.g. ``compare_type=True``).
    """
    plugin = enable_sync_autogenerate()
    options: dict[str, Any] = {
        "target_metadata": metadata,
        "include_schemas": True,
        "include_name": schema_filter(_schemas(metadata), include_name),
        "include_object": _chain_objects(include_object),
        "render_item": _chain_render(render_item),
        **other,
    }
    if plugin is not None:
        options["autogenerate_plugins"] = [*autogenerate_plugins, plugin]
    return options
