"""A scope-filtered ORM session for server-originated writes.

Models declared with ``SyncedBase`` carry neither a schema nor the hidden ``_sync_scope_id``
column, while the server tables are keyed ``(_sync_scope_id, key)``. These mechanisms make such
models safe to use inside one scope's bundle transaction:

* **Schema**: the connection gets ``schema_translate_map={None: <business schema>}``.
* **INSERT**: the owner guard fills ``_sync_scope_id`` from the bundle context.
* **UPDATE/DELETE by primary key** (unit of work): the ORM cannot scope-qualify them, so the
  transaction runs with ``oversync.bundle_scope_filter = 'on'`` and the owner guard skips other
  scopes' rows instead of rejecting the statement (enabled by the caller, see ``writes``).
* **SELECT and ORM-enabled UPDATE/DELETE statements**: a ``do_orm_execute`` hook adds
  ``with_loader_criteria(Model, <from>._sync_scope_id = current_setting('oversync.bundle_user_id'),
  include_aliases=True)`` for every registered model of the registries the statement uses, so
  joined models and ``aliased()`` entities are filtered as well; the criteria also propagate to
  relationship loads.
"""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Mapper, ORMExecuteState, registry, with_loader_criteria
from sqlalchemy.sql.base import ExecutableOption

from oversync_sa.server.runtime_info import SyncRuntime

__all__ = ["scoped_session"]


#: The scope of the running bundle, read from its own transaction-local context (§3.2).
_CURRENT_SCOPE: Final = sa.func.current_setting("oversync.bundle_user_id", type_=sa.Text)


def _scope_criterion(entity: Any) -> sa.ColumnElement[bool]:
    """``<entity's FROM>._sync_scope_id = <bundle user>``, for a class or an ``aliased()`` one.

    SQLAlchemy calls this once per entity occurrence, passing the aliased class for aliases, so
    the column is qualified with whichever FROM element the entity uses. Taking the scope from
    the transaction setting keeps the criterion free of Python state, so SQLAlchemy can cache
    it for every scope.
    """
    # ``entity`` arrives wrapped by SQLAlchemy; a mapped attribute of it carries the FROM element
    # (the table, or the alias for an aliased class).
    mapper = entity.__mapper__
    key = mapper.get_property_by_column(mapper.primary_key[0]).key
    selectable = getattr(entity, key).expression.table
    # The name is a literal on purpose: SQLAlchemy's lambda analysis would turn a module-level
    # string into a tracked bound value.
    return sa.column("_sync_scope_id", sa.Text, _selectable=selectable) == _CURRENT_SCOPE


def _registered(mapper: Mapper[Any], runtime: SyncRuntime, schema: str) -> bool:
    table = mapper.local_table
    if not isinstance(table, sa.Table):
        return False
    return f"{(table.schema or schema).lower()}.{table.name.lower()}" in runtime.by_name


async def scoped_session(
    conn: AsyncConnection, runtime: SyncRuntime, *, schema: str
) -> AsyncSession:
    """An ``AsyncSession`` joined to ``conn``'s transaction, filtered to the bundle's scope.

    The session never commits the bundle transaction: ``commit()`` on it only flushes
    (``join_transaction_mode="rollback_only"`` leaves the outer transaction to its
    owner), while a failure still rolls the whole bundle back.
    """
    await conn.execution_options(schema_translate_map={None: schema})
    session = AsyncSession(bind=conn, join_transaction_mode="rollback_only", expire_on_commit=False)

    options_by_registry: dict[registry, tuple[ExecutableOption, ...]] = {}

    def _options_for(reg: registry) -> tuple[ExecutableOption, ...]:
        # Every registered model of the statement's registries, not only the selected entities:
        # a joined model must be filtered too, and criteria for absent entities are no-ops.
        cached = options_by_registry.get(reg)
        if cached is None:
            cached = tuple(
                with_loader_criteria(
                    mapper.class_,
                    _scope_criterion,
                    include_aliases=True,
                )
                for mapper in reg.mappers
                if _registered(mapper, runtime, schema)
            )
            options_by_registry[reg] = cached
        return cached

    def _add_scope_criteria(state: ORMExecuteState) -> None:
        if not (state.is_select or state.is_update or state.is_delete):
            return
        options = [
            option
            for reg in {mapper.registry for mapper in state.all_mappers}
            for option in _options_for(reg)
        ]
        if options:
            state.statement = state.statement.options(*options)

    event.listen(session.sync_session, "do_orm_execute", _add_scope_criteria)
    return session
