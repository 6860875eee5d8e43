"""Errors raised by the SQLite client's building blocks.

All derive from :class:`oversync_sa.errors.OversyncError`. Encoding errors carry the table, column
and (when known) the row key so a failing push or pull can be traced to one row without logging
payloads.
"""

from __future__ import annotations

from oversync_sa.errors import ConfigurationError, OversyncError

__all__ = [
    "ConfigFieldError",
    "DatabaseInitializationError",
    "KeyEncodingError",
    "PayloadEncodingError",
]


class ConfigFieldError(ConfigurationError):
    """One field of :class:`~oversync_sa.client.config.ClientConfig` (or a nested value) is invalid.

    ``field`` is the dotted path of the offending field, e.g. ``"retry_policy.jitter_fraction"``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class DatabaseInitializationError(OversyncError):
    """The local metadata tables could not be created on the given connection."""


class KeyEncodingError(OversyncError, ValueError):
    """A sync key could not be converted between its local, SQL and wire forms.

    ``value`` is the offending key value as received (local PK string or wire value).
    """

    def __init__(self, table: str, key_column: str, value: object, message: str) -> None:
        self.table = table
        self.key_column = key_column
        self.value = value
        super().__init__(f"{table}.{key_column}: {message}")


class PayloadEncodingError(OversyncError, ValueError):
    """A row payload could not be converted between its local and wire encodings.

    ``column`` is ``None`` when the payload as a whole is malformed (not an object, wrong column
    set). ``key`` is the local PK of the row when the caller knows it.
    """

    def __init__(
        self,
        table: str,
        message: str,
        *,
        column: str | None = None,
        key: str | None = None,
    ) -> None:
        self.table = table
        self.column = column
        self.key = key
        where = table if key is None else f"{table} key {key!r}"
        super().__init__(f"{where}: {message}")
