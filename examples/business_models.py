"""The example server's business schema (SERVER.md §10.1) declared once with ``SyncedBase``.

``server_projection(BusinessBase)`` yields the eight PostgreSQL tables of the reference
example (scope column, ``(_sync_scope_id, id)`` keys, scope-inclusive deferred FKs with the
same constraint names); ``client_projection(BusinessBase)`` yields the SQLite mirror.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from oversync_sa.metadata import SyncedBase

__all__ = [
    "REGISTER_ORDER",
    "BusinessBase",
    "Category",
    "File",
    "FileReview",
    "Post",
    "Team",
    "TeamMember",
    "TypedRow",
    "User",
]


class BusinessBase(SyncedBase):
    """Base of the example's models; its own MetaData holds exactly the eight tables."""


class User(BusinessBase):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str]
    email: Mapped[str]
    created_at: Mapped[datetime | None] = mapped_column(server_default=sa.func.now())
    updated_at: Mapped[datetime | None] = mapped_column(server_default=sa.func.now())


class Post(BusinessBase):
    __tablename__ = "posts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    title: Mapped[str]
    content: Mapped[str]
    # MATCH SIMPLE: a NULL author skips the check.
    author_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", name="posts_author_id_fkey")
    )
    created_at: Mapped[datetime | None] = mapped_column(server_default=sa.func.now())
    updated_at: Mapped[datetime | None] = mapped_column(server_default=sa.func.now())


class Category(BusinessBase):
    __tablename__ = "categories"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str]
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("categories.id", name="categories_parent_id_fkey", ondelete="CASCADE")
    )


class Team(BusinessBase):
    __tablename__ = "teams"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str]
    # Half of the teams <-> team_members cycle: added by ALTER TABLE after both tables exist.
    captain_member_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("team_members.id", name="teams_captain_member_id_fkey", use_alter=True)
    )


class TeamMember(BusinessBase):
    __tablename__ = "team_members"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str]
    team_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("teams.id", name="team_members_team_id_fkey", ondelete="CASCADE")
    )


class File(BusinessBase):
    __tablename__ = "files"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str]
    data: Mapped[bytes]


class FileReview(BusinessBase):
    __tablename__ = "file_reviews"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    review: Mapped[str]
    file_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("files.id", name="file_reviews_file_id_fkey", ondelete="CASCADE")
    )


class TypedRow(BusinessBase):
    """Type-fidelity table; ``enabled_flag`` is deliberately a BIGINT, not a boolean."""

    __tablename__ = "typed_rows"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str]
    note: Mapped[str | None]
    count_value: Mapped[int | None]
    enabled_flag: Mapped[int]
    rating: Mapped[float | None]
    data: Mapped[bytes | None]
    created_at: Mapped[datetime | None]


#: Registration order of the reference server (SERVER.md §10.1); ``table_id`` s come from the
#: sorted names, not from this order.
REGISTER_ORDER: list[str] = [
    "users",
    "posts",
    "categories",
    "teams",
    "team_members",
    "files",
    "file_reviews",
    "typed_rows",
]
