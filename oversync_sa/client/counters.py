"""The per-client activity tally behind :attr:`SyncStatus.counters <.results.SyncStatus>`.

Kept in process memory on the :class:`~oversync_sa.client.runtime.ClientRuntime`: counting is
free on the sync path, and a restart starting from zero is what "since this client started"
means. The push/pull/snapshot/conflict modules increment it once an operation has succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass

from oversync_sa.client.results import SyncCounters

__all__ = ["ClientCounters"]


@dataclass(slots=True)
class ClientCounters:
    """Mutable counters; :meth:`snapshot` freezes them for a status report."""

    pushes: int = 0
    pulls: int = 0
    rebuilds: int = 0
    conflicts_resolved: int = 0

    def snapshot(self) -> SyncCounters:
        return SyncCounters(self.pushes, self.pulls, self.rebuilds, self.conflicts_resolved)
