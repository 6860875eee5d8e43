"""notes_models.py: the synced models, shared by the server and every client."""

import uuid

from sqlalchemy.orm import Mapped, mapped_column

from oversync_sa.metadata import SyncedBase


class Base(SyncedBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)  # the sync key
    title: Mapped[str]
    done: Mapped[bool] = mapped_column(default=False)
