"""oversync-sa: two-way sync between SQLite clients and an authoritative PostgreSQL server.

The public API is re-exported here; see ``docs/architecture.md`` for the layers.
"""

from oversync_sa import errors
from oversync_sa.errors import OversyncError, UnsupportedSchemaError, WireError

__version__ = "0.1.0.dev0"

__all__ = [
    "OversyncError",
    "UnsupportedSchemaError",
    "WireError",
    "__version__",
    "errors",
]
