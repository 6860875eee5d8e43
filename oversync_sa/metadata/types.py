"""Column types that store the same Python values correctly on PostgreSQL and on SQLite.

A synced model is used twice: against the authoritative PostgreSQL tables and against the
client's SQLite mirror. The generic SQLAlchemy types do not agree with what the sync protocol
expects on SQLite (``Uuid`` stores 32-hex ``CHAR(32)``, ``DateTime`` stores
``YYYY-MM-DD HH:MM:SS.ffffff``), so these decorators pick the storage per dialect:

=================  ============================  ==============================================
Type               PostgreSQL                    SQLite
=================  ============================  ==============================================
:class:`SyncUUID`  ``UUID``                      16-byte ``BLOB`` or canonical ``TEXT``
:class:`UTCDateTime` ``TIMESTAMP WITH TIME ZONE`` RFC 3339 UTC ``TEXT`` ending in ``Z``
:class:`SyncBoolean` ``BOOLEAN``                 ``INTEGER`` 0/1
=================  ============================  ==============================================

:data:`TYPE_ANNOTATION_MAP` is the ``type_annotation_map`` of :class:`~oversync_sa.metadata.
SyncedBase`, so plain ``Mapped[uuid.UUID]`` or ``Mapped[datetime]`` pick these types.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from oversync_sa.wire.timefmt import format_timestamp

__all__ = [
    "TYPE_ANNOTATION_MAP",
    "SyncBoolean",
    "SyncUUID",
    "UTCDateTime",
    "UuidStorage",
    "format_rfc3339_utc",
    "parse_rfc3339",
]

#: How a UUID is stored on SQLite: raw 16 bytes or the canonical dashed lower-case text.
UuidStorage = Literal["blob", "text"]


def _is_sqlite(dialect: Dialect) -> bool:
    return dialect.name == "sqlite"


class SyncUUID(TypeDecorator[uuid.UUID]):
    """A UUID: native ``uuid`` on PostgreSQL, ``BLOB`` (16 bytes) or ``TEXT`` on SQLite.

    The SQLite storage follows the client's wire rules (CLIENT.md §1.2, §3.6): the sync key and
    the columns referencing a UUID key must be ``BLOB`` (they travel as UUID text), while any
    other ``BLOB`` column travels as base64, which the server's ``uuid`` column would reject; so
    other UUID columns are stored as canonical text. ``local_storage=None`` means "decide when
    the table is registered for sync" (key and FK columns become ``blob``, the rest ``text``);
    an unregistered column left undecided is stored as text.
    """

    impl = sa.Uuid
    cache_ok = True

    def __init__(self, local_storage: UuidStorage | None = None) -> None:
        super().__init__()
        self.local_storage: UuidStorage | None = local_storage

    @property
    def python_type(self) -> type[uuid.UUID]:
        return uuid.UUID

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _is_sqlite(dialect):
            storage: TypeEngine[Any] = (
                sa.LargeBinary() if self.local_storage == "blob" else sa.Text()
            )
            return dialect.type_descriptor(storage)
        return dialect.type_descriptor(sa.Uuid(as_uuid=True))

    def process_bind_param(self, value: uuid.UUID | str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        as_uuid = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        if not _is_sqlite(dialect):
            return as_uuid
        return as_uuid.bytes if self.local_storage == "blob" else str(as_uuid)

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        if value is None or isinstance(value, uuid.UUID):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return uuid.UUID(bytes=bytes(value))
        return uuid.UUID(str(value))


def format_rfc3339_utc(value: datetime) -> str:
    """Render an aware datetime as RFC 3339 UTC with ``Z``, exactly as the wire does.

    One formatter for local storage and the wire keeps the same instant byte-identical
    everywhere. A naive datetime is refused (``ValueError``): guessing a zone would silently
    shift instants.
    """
    return format_timestamp(value)


def parse_rfc3339(text: str) -> datetime:
    """Parse stored timestamp text into an aware UTC datetime.

    Accepts what the local side writes (``...Z``), what PostgreSQL renders into payloads
    (``...+00:00`` or any other offset, any fraction length) and SQLite's own
    ``CURRENT_TIMESTAMP`` form without a zone, which SQLite defines as UTC.
    """
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An instant: ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL, RFC 3339 UTC text on SQLite.

    Values read back are always aware and in UTC. Naive datetimes are rejected on write.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _is_sqlite(dialect):
            return dialect.type_descriptor(sa.Text())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"timezone-aware datetime required, got naive {value!r}")
        if _is_sqlite(dialect):
            return format_rfc3339_utc(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return parse_rfc3339(str(value))


class SyncBoolean(TypeDecorator[bool]):
    """A boolean: ``BOOLEAN`` on PostgreSQL, ``INTEGER`` 0/1 on SQLite.

    SQLite triggers capture the stored integer, and the server's ``jsonb_populate_record``
    accepts ``0``/``1`` for a boolean column, so both directions of the wire work.
    """

    impl = sa.Boolean
    cache_ok = True

    @property
    def python_type(self) -> type[bool]:
        return bool

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _is_sqlite(dialect):
            return dialect.type_descriptor(sa.Integer())
        return dialect.type_descriptor(sa.Boolean())

    def process_bind_param(self, value: bool | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return int(bool(value)) if _is_sqlite(dialect) else bool(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> bool | None:
        return None if value is None else bool(value)


#: ``SyncedBase.type_annotation_map``: Python annotations to portable column types.
#: ``int`` is ``BIGINT`` and ``float`` ``DOUBLE PRECISION`` because wire numbers are 64-bit;
#: ``str`` is ``TEXT`` because the server accepts only ``text`` (not ``varchar``) sync keys.
TYPE_ANNOTATION_MAP: dict[Any, TypeEngine[Any]] = {
    uuid.UUID: SyncUUID(),
    datetime: UTCDateTime(),
    bytes: sa.LargeBinary(),
    bool: SyncBoolean(),
    Decimal: sa.Numeric(),
    int: sa.BigInteger(),
    float: sa.Double(),
    str: sa.Text(),
}
