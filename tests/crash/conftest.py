"""The client crash tests share one reference server per module (the e2e client fixtures)."""

from tests.e2e.client.conftest import harness, harness_module, live_server

__all__ = ["harness", "harness_module", "live_server"]
