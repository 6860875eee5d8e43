"""The ``already_committed`` proof accepts what PostgreSQL makes of a naive date-time we sent.

``replay_equivalent`` keeps Go's rule (a naive text never equals a zoned one, CLIENT.md §5.3,
pinned in ``test_go_parity_replay``); the proof also accepts the server's rendering of a naive
value we sent, whose wall clock is unchanged. Since a mismatch moves the outbox to a fresh
source and pushes it again, a false mismatch re-sends already committed rows.
"""

from __future__ import annotations

import pytest

from oversync_sa.client.replay import _stored_as, replay_equivalent


@pytest.mark.parametrize(
    ("sent", "committed", "stored"),
    [
        # timestamptz, session TimeZone UTC / America/New_York: the wall clock is kept.
        ("2026-03-24 18:42:11", "2026-03-24T18:42:11+00:00", True),
        ("2026-03-24 18:42:11.250000", "2026-03-24T18:42:11.25-04:00", True),
        # timestamp without time zone: ISO 8601 with T, fraction trimmed.
        ("2026-03-24 18:42:11.000000", "2026-03-24T18:42:11", True),
        # Zoned text we sent is compared as an instant only.
        ("2026-03-24T18:42:11Z", "2026-03-24T20:42:11+02:00", True),
        ("2026-03-24T18:42:11Z", "2026-03-24T18:42:11-04:00", False),
        # Another value is another value.
        ("2026-03-24 18:42:11", "2026-03-24T18:42:12+00:00", False),
        ("2026-03-24 18:42:11", "2026-03-24T18:42:11.5+00:00", False),
        ("2026-03-24 18:42:11", "2026-03-25 18:42:11", False),
        ("not a date", "2026-03-24T18:42:11", False),
    ],
)
def test_proof_accepts_the_servers_rendering_of_a_naive_timestamp(
    sent: str, committed: str, stored: bool
) -> None:
    assert _stored_as({"at": sent, "n": 1}, {"at": committed, "n": 1.0}) is stored
    assert _stored_as([sent], [committed]) is stored


def test_proof_is_directional_and_go_equivalence_is_unchanged() -> None:
    # A naive committed value is never what the server made of a zoned one we sent.
    assert not _stored_as("2026-03-24T18:42:11+00:00", "2026-03-24 18:42:11")
    assert not replay_equivalent("2026-03-24 18:42:11", "2026-03-24T18:42:11Z")
    assert not _stored_as({"b": True}, {"b": 1})
    assert not _stored_as({"a": 1}, {"a": 1, "extra": None})
