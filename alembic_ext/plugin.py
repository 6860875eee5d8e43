"""The Alembic plugin: ``setup(plugin)`` for Alembic ≥ 1.18, plus a fallback for older releases.

Alembic ≥ 1.18 loads ``setup`` through the ``alembic.plugins`` entry point named
:data:`PLUGIN_NAME`; autogenerate then uses it when ``autogenerate_plugins`` names it. Without
the installed entry point (e.g. running from a source checkout), :func:`ensure_plugin` registers
the same module by hand. Alembic < 1.18 has no plugin registry: :func:`ensure_plugin` then adds
the comparator to the global ``comparators`` dispatcher, which those releases consult.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any, Final

# Only these two: Alembic loads this module through its entry point *while*
# ``alembic.autogenerate`` is still being imported, so anything that touches
# ``alembic.autogenerate`` (or our render/compare modules, which do) must be imported lazily.
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext
    from alembic.operations.ops import UpgradeOps

__all__ = ["PLUGIN_NAME", "ensure_plugin", "setup"]

#: Name under which the plugin is published and listed in ``autogenerate_plugins``.
PLUGIN_NAME: Final = "oversync_sa"


def setup(plugin: Plugin) -> None:
    """Entry-point hook: register the sync comparator after Alembic's own ones."""
    plugin.add_autogenerate_comparator(_compare, "schema", priority=DispatchPriority.LAST)


def _compare(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps, schemas: set[Any]
) -> PriorityDispatchResult:
    import alembic_ext.render  # noqa: F401  (registers the operations and their renderers)
    from alembic_ext.compare import compare_sync_state

    compare_sync_state(autogen_context, upgrade_ops, schemas)
    return PriorityDispatchResult.CONTINUE


def ensure_plugin() -> str:
    """Make sure the plugin is registered (idempotent) and return its name."""
    # ValueError: already registered, by the entry point or an earlier call
    with contextlib.suppress(ValueError):
        Plugin.setup_plugin_from_module(sys.modules[__name__], PLUGIN_NAME)
    return PLUGIN_NAME
