"""The reference sync server: a Litestar drop-in for go-oversync's ``examples/nethttp_server``.

Run it from the repository root with ``python -m examples.litestar_server``. See
:mod:`.settings` for the environment it reads and :mod:`.app` for the routes it serves.
"""

from examples.litestar_server.app import ExampleServer, create_app
from examples.litestar_server.settings import Settings

__all__ = ["ExampleServer", "Settings", "create_app"]
