"""Server-originated writes: a back-office job adds a note to a user's scope.

Clients receive it on their next pull like any pushed change, because the write commits as one
bundle of the writer ``"welcome-job"`` in that user's scope.
"""

import uuid

import sqlalchemy as sa

from oversync_sa.server import SyncService
from oversync_sa.server.writes import BundleWriter, ScopeManager, ScopeWriteResult


async def send_welcome_note(service: SyncService, user_id: str) -> ScopeWriteResult:
    async def write(writer: BundleWriter) -> None:
        # The owner-guard trigger fills _sync_scope_id with writer.user_id on insert.
        await writer.connection.execute(
            sa.text("INSERT INTO business.notes (id, title, done) VALUES (:id, :title, false)"),
            {"id": uuid.uuid4(), "title": "Welcome!"},
        )

    manager = ScopeManager(service)
    return await manager.exec_write(user_id, write, writer_id="welcome-job")
