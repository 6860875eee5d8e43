"""``SyncedBase``: the declarative base family for synced models.

``class Base(SyncedBase): pass`` must behave like ``class Base(DeclarativeBase): pass``: a
fresh ``registry`` and ``MetaData`` per base, so independent model sets coexist. SQLAlchemy
creates those only for *direct* subclasses of ``DeclarativeBase``, so ``SyncedBase`` is a mixin
whose metaclass adds ``DeclarativeBase`` to the bases of each direct subclass. SQLAlchemy then
sets the new base up through its own, unmodified code path (``type_annotation_map`` is taken
from this mixin); nothing of SQLAlchemy is patched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm.decl_api import DeclarativeAttributeIntercept
from sqlalchemy.types import TypeEngine

from oversync_sa.metadata.registration import SyncOptions, _register
from oversync_sa.metadata.types import TYPE_ANNOTATION_MAP

__all__ = ["SyncedBase"]


class _SyncedBaseMeta(DeclarativeAttributeIntercept):
    """Turns each direct subclass of ``SyncedBase`` into a real ``DeclarativeBase``."""

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kw: Any
    ) -> _SyncedBaseMeta:
        if any(b.__dict__.get("_oversync_root", False) for b in bases) and (
            DeclarativeBase not in bases
        ):
            bases = (*bases, DeclarativeBase)
        return super().__new__(mcs, name, bases, namespace, **kw)


if TYPE_CHECKING:
    # Every concrete base derived from SyncedBase *is* a DeclarativeBase at runtime; telling
    # the type checker so gives models the usual typed ``__init__``, ``metadata``, etc.
    _Declarative = DeclarativeBase
else:
    _Declarative = object


class SyncedBase(_Declarative, metaclass=_SyncedBaseMeta):
    """Subclass once per model set: ``class Base(SyncedBase): pass``; then declare models.

    Every mapped subclass with its own table is registered for sync when it is declared
    (``Table.info["oversync"]``); the table's rules are checked then and a broken model raises
    :class:`~oversync_sa.errors.UnsupportedSchemaError` listing all its violations. Rules that
    span tables (FK targets) are checked by :func:`~oversync_sa.metadata.sync_registry` and
    the projections. Options go in ``__sync_options__``.
    """

    _oversync_root: ClassVar[bool] = True
    type_annotation_map: ClassVar[dict[Any, TypeEngine[Any]]] = TYPE_ANNOTATION_MAP
    __sync_options__: ClassVar[SyncOptions] = SyncOptions()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        table = cls.__dict__.get("__table__")
        if isinstance(table, sa.Table) and table.info.get("oversync") is None:
            _register(
                table,
                key=None,
                options=cls.__sync_options__,
                model=cls.__name__,
                orm=True,
            )
