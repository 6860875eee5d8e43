"""One live reference server per property-test module (the examples share it).

Each Hypothesis example runs in its own event loop (``asyncio.run``), so everything bound to a
loop - engines, clients - is created per example; only the server process is shared, and
examples isolate themselves by fresh user ids (scopes).
"""

from tests.e2e.client.conftest import live_server

__all__ = ["live_server"]
