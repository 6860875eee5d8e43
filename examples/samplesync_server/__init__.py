"""The sync server of go-oversync's Kotlin Multiplatform sample app, on oversync-sa + Litestar.

Run it from the repository root with ``python -m examples.samplesync_server``; point the
``samplesync-kmp`` app at ``http://localhost:8080`` (``http://10.0.2.2:8080`` from the Android
emulator) with schema ``business``. :mod:`.models` declares the schema, :mod:`.settings` the
environment it reads and :mod:`.app` the routes it serves.
"""

from examples.samplesync_server.app import SampleSyncServer, create_app
from examples.samplesync_server.models import Comment, Person, PersonAddress, SampleSyncBase
from examples.samplesync_server.settings import settings_from_env

__all__ = [
    "Comment",
    "Person",
    "PersonAddress",
    "SampleSyncBase",
    "SampleSyncServer",
    "create_app",
    "settings_from_env",
]
