"""Sending side of the bundle-change watch (SERVER.md §7.4).

``pg_notify`` runs inside the bundle's own transaction (finalisation's persist statement,
:mod:`.finalize`): PostgreSQL delivers it only when that transaction commits, so listeners are
never woken for a rolled-back or empty bundle.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ["DEFAULT_NOTIFY_CHANNEL", "bundle_change_payload"]

DEFAULT_NOTIFY_CHANNEL: Final = "oversync_bundle_change_v1"

def bundle_change_payload(
    *, user_pk: int, bundle_seq: int, source_id: str = "", source_bundle_id: int = 0
) -> str:
    """The NOTIFY payload; ``source_id``/``source_bundle_id`` are omitted when empty/0.

    Member order follows the Go struct; listeners parse it, so the order carries no meaning.
    """
    body: dict[str, int | str] = {"user_pk": user_pk, "bundle_seq": bundle_seq}
    if source_id:
        body["source_id"] = source_id
    if source_bundle_id:
        body["source_bundle_id"] = source_bundle_id
    return msgspec.json.encode(body).decode("utf-8")
