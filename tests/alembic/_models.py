"""Model versions walked by the migration tests; each call builds a fresh SyncedBase."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from alembic_ext import target_metadata
from oversync_sa.metadata import SyncedBase
from oversync_sa.server import ServiceConfig

#: The schema every synced test table lives in.
SCHEMA = "business"

#: (version name, users' extra column or None, posts: None / "plain" / "fk")
VERSIONS: dict[str, tuple[str | None, str | None]] = {
    "v1": (None, None),
    "v2": ("email", None),  # add a column
    "v3": ("mail", None),  # rename it
    "v4": (None, None),  # drop it
    "v5": (None, "plain"),  # add a synced table
    "v6": (None, "fk"),  # add an FK between synced tables
    "v7": (None, None),  # drop the synced table
}


def build(version: str) -> type[Any]:
    """The declarative base of ``version``."""
    extra, posts = VERSIONS[version]

    class Base(SyncedBase):
        pass

    user_attrs: dict[str, Any] = {
        "__tablename__": "users",
        "__annotations__": {"id": Mapped[uuid.UUID], "name": Mapped[str]},
        "id": mapped_column(primary_key=True),
        "name": mapped_column(),
    }
    if extra is not None:
        user_attrs["__annotations__"][extra] = Mapped[str | None]
        user_attrs[extra] = mapped_column(nullable=True)
    type("User", (Base,), user_attrs)

    if posts is not None:
        post_attrs: dict[str, Any] = {
            "__tablename__": "posts",
            "__annotations__": {"id": Mapped[uuid.UUID], "title": Mapped[str]},
            "id": mapped_column(primary_key=True),
            "title": mapped_column(),
        }
        if posts == "fk":
            post_attrs["__annotations__"]["author_id"] = Mapped[uuid.UUID | None]
            post_attrs["author_id"] = mapped_column(
                sa.ForeignKey("users.id", name="posts_author_id_fkey", ondelete="CASCADE"),
                nullable=True,
            )
        type("Post", (Base,), post_attrs)
    return Base


def metadata(version: str) -> sa.MetaData:
    return target_metadata(build(version), schema=SCHEMA)


def service_config(version: str) -> ServiceConfig:
    return ServiceConfig.from_models(build(version), schema=SCHEMA)
