"""Models the CLI tests point ``--models`` at: two synced tables and one declared-only."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from oversync_sa.metadata import SyncedBase


class Base(SyncedBase):
    pass


class Author(Base):
    __tablename__ = "authors"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str]


class Book(Base):
    __tablename__ = "books"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("authors.id", name="books_author_id_fkey")
    )


class EmptyBase(SyncedBase):
    """A base without synced tables."""


NOT_A_BASE = 42
