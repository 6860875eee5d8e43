"""Every pull test runs on each way ``bulk_apply`` can write a bundle.

* ``driver-hop``: aiosqlite, ``BEGIN`` ... ``COMMIT`` of a bundle in one hop to its thread;
* ``sqlalchemy-tx``: another async driver, so the transaction is SQLAlchemy's and the
  statements run through :meth:`AsyncConnection.run_sync`.
"""

from __future__ import annotations

import pytest

from oversync_sa.client import driver


@pytest.fixture(autouse=True, params=["driver-hop", "sqlalchemy-tx"])
def apply_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "sqlalchemy-tx":
        monkeypatch.setattr(driver, "worker_submitter", lambda _driver: None)
    return str(request.param)
