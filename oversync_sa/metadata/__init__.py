"""Declare synced models once; derive the PostgreSQL and SQLite tables from them.

Declaring::

    class Base(SyncedBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
        name: Mapped[str]

Each ``Base`` has its own ``MetaData``/registry. Every mapped model is registered for sync
(``Table.info["oversync"]`` holds a :class:`SyncRegistration`); Core users call
:func:`sync_table`. :func:`sync_registry` validates a whole model set and describes it
(:class:`SyncRegistry`, :class:`SyncedTableInfo`); :func:`server_projection` and
:func:`client_projection` return the two physical table sets.

How the server uses the models
------------------------------
* **DDL and Core access** use the server projection: ``server_projection(Base)`` contains
  the real tables (schema ``business`` by default, hidden ``_sync_scope_id``, scope-inclusive
  keys). Create them with ``create_all`` or Alembic *before* sync bootstrap.
* **ORM writes** use the declared model classes unchanged, in a server ``AsyncSession`` that
  maps the schema-less declared tables onto the projection with
  ``execution_options(schema_translate_map={None: "business"})`` and runs inside a bundle
  context. The declared tables do not have ``_sync_scope_id``: INSERTs omit it and the owner
  guard trigger fills it from the bundle context (SERVER.md §3.1); UPDATE/DELETE/SELECT must
  be constrained to the actor's scope by that session (the guard raises, it does not filter).
  Composite identity is therefore never visible to ORM code: within one scope the sync key
  alone identifies a row.

How the client uses the models
------------------------------
``client_projection(Base)`` is created in the SQLite file; the declared model classes then
work with a plain ORM ``Session`` on it, because the types of :data:`TYPE_ANNOTATION_MAP`
(:class:`SyncUUID`, :class:`UTCDateTime`, :class:`SyncBoolean`) bind and read the SQLite
storage the projection creates. UUID storage on SQLite is decided at registration: the key
and FK columns are 16-byte BLOBs, other UUID columns canonical text (a non-FK BLOB travels as
base64 and the server's ``uuid`` column would reject it). See ``docs/metadata.md``.
"""

from oversync_sa.metadata.base import SyncedBase
from oversync_sa.metadata.projection import SERVER_INFO_KEY, client_projection, server_projection
from oversync_sa.metadata.registration import (
    SyncOptions,
    SyncRegistration,
    registration_of,
    sync_table,
)
from oversync_sa.metadata.registry import SyncedTableInfo, SyncRegistry, metadata_of, sync_registry
from oversync_sa.metadata.types import (
    TYPE_ANNOTATION_MAP,
    SyncBoolean,
    SyncUUID,
    UTCDateTime,
    UuidStorage,
    format_rfc3339_utc,
    parse_rfc3339,
)

#: Name of the hidden owner column of every server-side synced table.
SCOPE_COLUMN = "_sync_scope_id"

__all__ = [
    "SCOPE_COLUMN",
    "SERVER_INFO_KEY",
    "TYPE_ANNOTATION_MAP",
    "SyncBoolean",
    "SyncOptions",
    "SyncRegistration",
    "SyncRegistry",
    "SyncUUID",
    "SyncedBase",
    "SyncedTableInfo",
    "UTCDateTime",
    "UuidStorage",
    "client_projection",
    "format_rfc3339_utc",
    "metadata_of",
    "parse_rfc3339",
    "registration_of",
    "server_projection",
    "sync_registry",
    "sync_table",
]
