"""Client projection on a real SQLite file: DDL shape and ORM round trips."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from examples.business_models import BusinessBase, File, FileReview, TypedRow, User
from oversync_sa.metadata import (
    SyncedBase,
    SyncUUID,
    UTCDateTime,
    client_projection,
    format_rfc3339_utc,
    parse_rfc3339,
    sync_registry,
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'client.db'}")

    @sa.event.listens_for(eng, "connect")
    def _fk_on(dbapi_conn: object, _record: object) -> None:
        dbapi_conn.execute("PRAGMA foreign_keys=ON")  # type: ignore[attr-defined]

    client_projection(BusinessBase).create_all(eng)
    try:
        yield eng
    finally:
        eng.dispose()


def test_key_declared_types_and_foreign_keys(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        for table in ("users", "files", "file_reviews", "typed_rows"):
            info = conn.exec_driver_sql(f"PRAGMA table_info({table})").all()
            pk = [(row[1], row[2]) for row in info if row[5] > 0]
            assert pk == [("id", "BLOB")]
        created_at = {
            row[1]: row[2] for row in conn.exec_driver_sql("PRAGMA table_info(users)")
        }
        assert created_at["created_at"] == "TEXT"
        fks = conn.exec_driver_sql("PRAGMA foreign_key_list(file_reviews)").all()
        # (id, seq, table, from, to, on_update, on_delete, match)
        assert [(r[1], r[2], r[3], r[4], r[6]) for r in fks] == [
            (0, "files", "file_id", "id", "CASCADE")
        ]
        team_fks = conn.exec_driver_sql("PRAGMA foreign_key_list(teams)").all()
        assert [(r[2], r[3], r[4]) for r in team_fks] == [
            ("team_members", "captain_member_id", "id")
        ]


def test_client_projection_is_itself_a_valid_registry() -> None:
    reg = sync_registry(client_projection(BusinessBase))
    assert list(reg.tables) == list(sync_registry(BusinessBase).tables)
    assert reg.tables["file_reviews"].parents == ("files",)


def test_orm_round_trip_with_uuid_datetime_bytes_and_flags(engine: sa.Engine) -> None:
    file_id, review_id, row_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    at = datetime(2026, 3, 24, 18, 42, 11, 120000, tzinfo=timezone(timedelta(hours=2)))
    with Session(engine) as session:
        session.add(File(id=file_id, name="a.bin", data=b"\x00\x01\xff"))
        session.add(FileReview(id=review_id, review="ok", file_id=file_id))
        session.add(
            TypedRow(id=row_id, name="t", enabled_flag=1, rating=2.5, data=b"", created_at=at)
        )
        session.commit()
    with Session(engine) as session:
        review = session.get_one(FileReview, review_id)
        assert review.file_id == file_id
        assert session.get_one(File, file_id).data == b"\x00\x01\xff"
        row = session.get_one(TypedRow, row_id)
        assert row.created_at == at
        assert row.created_at.tzinfo is UTC
        assert row.data == b""
    with engine.connect() as conn:
        raw = conn.exec_driver_sql(
            "SELECT id, file_id, typeof(id) FROM file_reviews"
        ).one()
        assert raw == (review_id.bytes, file_id.bytes, "blob")
        stored_at = conn.exec_driver_sql("SELECT created_at FROM typed_rows").scalar_one()
        assert stored_at == "2026-03-24T16:42:11.12Z"


def test_server_rendered_timestamps_and_sqlite_defaults_read_back(engine: sa.Engine) -> None:
    user_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO users (id, name, email, created_at) VALUES (?, 'n', 'e', ?)",
            (user_id.bytes, "2026-03-24T18:42:11.5+00:00"),
        )
    with Session(engine) as session:
        user = session.get_one(User, user_id)
        assert user.created_at == datetime(2026, 3, 24, 18, 42, 11, 500000, tzinfo=UTC)
        assert user.updated_at is not None  # filled by the RFC 3339 SQLite default
        assert user.updated_at.tzinfo is UTC
    with engine.connect() as conn:
        text = conn.exec_driver_sql("SELECT updated_at FROM users").scalar_one()
        assert text.endswith("Z")
        assert "T" in text


def test_booleans_and_text_uuids_on_sqlite(tmp_path: Path) -> None:
    class Base(SyncedBase):
        pass

    class Flag(Base):
        __tablename__ = "flags"
        id: Mapped[str] = mapped_column(primary_key=True)
        enabled: Mapped[bool]
        ref: Mapped[uuid.UUID | None]

    eng = sa.create_engine(f"sqlite:///{tmp_path / 'flags.db'}")
    client_projection(Base).create_all(eng)
    ref = uuid.uuid4()
    with Session(eng) as session:
        session.add_all([Flag(id="a", enabled=True, ref=ref), Flag(id="b", enabled=False)])
        session.commit()
        assert session.scalars(sa.select(Flag.id).where(Flag.enabled)).all() == ["a"]
        assert session.scalars(sa.select(Flag.id).where(Flag.ref == ref)).all() == ["a"]
    with eng.connect() as conn:
        types = {r[1]: r[2] for r in conn.exec_driver_sql("PRAGMA table_info(flags)")}
        assert types == {"id": "TEXT", "enabled": "INTEGER", "ref": "TEXT"}
        rows = conn.exec_driver_sql("SELECT enabled, ref FROM flags ORDER BY id").all()
        assert rows == [(1, str(ref)), (0, None)]
    eng.dispose()


def test_generic_core_types_are_mapped_to_sync_types_in_the_client_projection() -> None:
    md = sa.MetaData()
    from oversync_sa.metadata import sync_table

    sync_table(
        sa.Table(
            "events", md,
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("at", sa.DateTime(timezone=True)),
            sa.Column("ok", sa.Boolean),
            sa.Column("other", sa.Uuid),
        )
    )
    table = client_projection(md).tables["events"]
    assert isinstance(table.c.id.type, sa.Text)
    assert isinstance(table.c.at.type, UTCDateTime)
    assert isinstance(table.c.other.type, SyncUUID)
    assert table.c.other.type.local_storage == "text"
    ddl = str(sa.schema.CreateTable(table).compile(dialect=sqlite.dialect()))
    assert "ok INTEGER" in ddl


def test_rfc3339_helpers() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert format_rfc3339_utc(at) == "2026-01-02T03:04:05Z"
    assert format_rfc3339_utc(at.replace(microsecond=1)) == "2026-01-02T03:04:05.000001Z"
    assert parse_rfc3339("2026-01-02T05:04:05+02:00") == at
    assert parse_rfc3339("2026-01-02 03:04:05") == at
    assert parse_rfc3339("2026-01-02T03:04:05.000000000Z") == at
    with pytest.raises(ValueError, match="timezone-aware"):
        format_rfc3339_utc(datetime(2026, 1, 2))


def test_naive_datetimes_are_rejected_on_write() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        UTCDateTime().process_bind_param(
            datetime(2026, 1, 2), postgresql.dialect()  # type: ignore[no-untyped-call]
        )


def test_sync_uuid_binds_per_dialect() -> None:
    value = uuid.uuid4()
    pg = postgresql.dialect()  # type: ignore[no-untyped-call]
    lite = sqlite.dialect()
    assert SyncUUID("blob").process_bind_param(value, pg) == value
    assert SyncUUID("blob").process_bind_param(str(value), lite) == value.bytes
    assert SyncUUID("text").process_bind_param(value, lite) == str(value)
    assert SyncUUID().process_result_value(value.bytes, lite) == value
    assert SyncUUID().process_result_value(str(value), lite) == value
    assert SyncUUID().process_result_value(None, lite) is None
