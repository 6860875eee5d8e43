"""One reference-server process per fault-test module, over its own fresh PostgreSQL database.

The fixtures and the server, device and verification helpers are the client end-to-end suite's
(:mod:`tests.e2e.client.conftest`, :mod:`tests.e2e.client._support`): fault tests are the same
real client against the same real server, with :mod:`oversync_sa.testing.faults` between them.
A server that crashed under injected faults fails the module (its SIGTERM exit must be clean).
"""

from tests.e2e.client.conftest import harness, harness_module, live_server

__all__ = ["harness", "harness_module", "live_server"]
