"""Fixtures of the HTTP tests: a bootstrapped service and a client of an app mounting it.

The client is httpx over ``ASGITransport`` in the test's own event loop (Litestar's test client
runs the app on a loop of its own, which an asyncpg engine made here cannot be used from).
"""

from __future__ import annotations

# The fixtures live in http_support so that the security suite shares them.
from tests.http.http_support import client_fixture, service_fixture

__all__ = ["client_fixture", "service_fixture"]
