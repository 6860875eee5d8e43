"""The caller of a sync operation (SERVER.md §8)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Actor"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is calling: the scope (``user_id``, the trusted authenticated user) and the device
    (``source_id``, from ``Oversync-Source-ID``).

    The library never authenticates: the host establishes ``user_id`` and every row the actor
    touches is scoped to it through ``_sync_scope_id``.
    """

    user_id: str
    source_id: str
