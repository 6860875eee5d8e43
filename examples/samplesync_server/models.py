"""The sample app's schema: ``person``, ``person_address`` and ``comment``, declared once.

These are the three tables go-oversync's ``samplesync_server`` creates for the Kotlin
Multiplatform sample app, with the same columns, types, defaults, constraint and index names.
``server_metadata()`` gives the PostgreSQL tables in ``business``; a client passes
``SampleSyncBase`` as ``models=`` to ``SyncClient.create`` and gets the SQLite mirror.

The hidden ``_sync_scope_id`` column is not declared here: the server projection adds it,
together with the scope-first primary keys, unique index and deferred scope-inclusive FKs.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from oversync_sa.metadata import SCOPE_COLUMN, SyncedBase, server_projection

__all__ = [
    "SCHEMA",
    "Comment",
    "Person",
    "PersonAddress",
    "SampleSyncBase",
    "server_metadata",
]

#: The schema the sample app's client is configured with.
SCHEMA = "business"


class SampleSyncBase(SyncedBase):
    """Base of the sample app's models; its MetaData holds exactly the three tables."""


# Declaration order is registration order (ServiceConfig.from_models): the Go sample registers
# person, person_address, comment.
class Person(SampleSyncBase):
    __tablename__ = "person"
    __table_args__ = (
        # Scoped by the projection: one e-mail address per user, not per database.
        sa.Index("person_user_email_unique", "email", unique=True),
        sa.Index("idx_person_name", "last_name", "first_name"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    first_name: Mapped[str]
    last_name: Mapped[str]
    email: Mapped[str]
    phone: Mapped[str | None]
    # The sample app keeps birth dates as text (an ISO date), not as a DATE column.
    birth_date: Mapped[str | None]
    created_at: Mapped[datetime | None] = mapped_column(server_default=sa.func.now())
    updated_at: Mapped[datetime | None] = mapped_column(server_default=sa.func.now())
    score: Mapped[float | None]
    is_active: Mapped[bool] = mapped_column(server_default=sa.true())
    ssn: Mapped[int | None]
    notes: Mapped[str | None]


class PersonAddress(SampleSyncBase):
    __tablename__ = "person_address"
    __table_args__ = (
        sa.Index("idx_address_person", "person_id"),
        sa.Index("idx_address_person_primary", "person_id", "is_primary"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # No ON DELETE action, as in the Go schema: a person's addresses go first.
    person_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("person.id", name="person_address_person_id_fkey")
    )
    address_type: Mapped[str]
    street: Mapped[str]
    city: Mapped[str]
    state: Mapped[str | None]
    postal_code: Mapped[str | None]
    country: Mapped[str]
    is_primary: Mapped[bool] = mapped_column(server_default=sa.false())
    created_at: Mapped[datetime | None] = mapped_column(server_default=sa.func.now())


class Comment(SampleSyncBase):
    __tablename__ = "comment"
    __table_args__ = (sa.Index("idx_comment_person", "person_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("person.id", name="comment_person_id_fkey")
    )
    comment: Mapped[str]
    created_at: Mapped[datetime | None] = mapped_column(server_default=sa.func.now())
    # Free-form text in the sample app (e.g. comma-separated), not an array.
    tags: Mapped[str | None]


def server_metadata(schema: str = SCHEMA) -> sa.MetaData:
    """The PostgreSQL tables of the sample app, every index led by ``_sync_scope_id``.

    The projection already leads unique indexes with the scope column; the Go sample leads its
    plain lookup indexes with it too, because every query the sync runtime and the app run is
    confined to one user's scope. The declared indexes stay scope-less for the SQLite client,
    which holds one user only.
    """
    metadata = server_projection(SampleSyncBase, schema=schema)
    for table in metadata.tables.values():
        for index in [i for i in table.indexes if not i.unique]:
            columns = [c.name for c in index.columns]
            table.indexes.remove(index)
            sa.Index(index.name, table.c[SCOPE_COLUMN], *(table.c[c] for c in columns))
    return metadata
