"""Service lifecycle states shared by the facade and the modules it drives (SERVER.md §7.6)."""

from __future__ import annotations

import enum
from typing import Final

from oversync_sa.errors import OversyncError

__all__ = ["SHUTTING_DOWN_MESSAGE", "ServiceClosedError", "ServiceState"]

SHUTTING_DOWN_MESSAGE: Final = "Sync service is shutting down"


class ServiceState(enum.Enum):
    """``running`` → ``shutting_down`` (new work gets 503) → ``closed`` (new work fails)."""

    RUNNING = "running"
    SHUTTING_DOWN = "shutting_down"
    CLOSED = "closed"


class ServiceClosedError(OversyncError):
    """An operation was attempted after :meth:`SyncService.close` finished (→ endpoint 500)."""
