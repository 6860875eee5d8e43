"""Environment of the reference server, with go-oversync's example names and defaults (§10.2).

``DATABASE_URL`` is the one deliberate difference: unset means "start an embedded PostgreSQL in
``./.oversync/pgdata``" instead of Go's ``postgres://postgres:postgres@localhost:5432/...``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["APP_NAME", "DEFAULT_JWT_SECRET", "Settings", "SettingsError"]

_log = logging.getLogger(__name__)

APP_NAME: Final = "nethttp-server-example"
DEFAULT_JWT_SECRET: Final = "your-secret-key-change-in-production"
DEFAULT_DATABASE: Final = "clisync_example"
_TRUE_WORDS: Final = frozenset({"1", "true", "yes"})


class SettingsError(ValueError):
    """An environment value is unusable; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server reads from its environment."""

    database_url: str | None = None
    jwt_secret: str = DEFAULT_JWT_SECRET
    pool_max_conns: int = 50
    pool_min_conns: int = 5
    log_stage_timings: bool = False
    #: ``OVERSYNC_METRICS``: Prometheus metrics on ``GET /metrics`` (needs ``[metrics]``).
    metrics: bool = False
    #: ``OVERSYNC_ACCESS_LOG``: uvicorn's per-request access log. Off by default, like the Go
    #: example's request logging on the sync routes; a log line per request costs CPU.
    access_log: bool = False
    host: str = "0.0.0.0"
    port: int = 8080
    business_schema: str = "business"
    data_dir: Path = Path(".oversync") / "pgdata"
    database_name: str = DEFAULT_DATABASE

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Go-oversync's example variables, ``PORT``/``HOST`` and the ``OVERSYNC_*`` extras.

        Raises :class:`SettingsError` for malformed numbers or pool bounds (max >= 1,
        0 <= min <= max), as the Go example refuses to start on them.
        """
        secret = env.get("JWT_SECRET", "")
        if not secret:
            _log.warning("Using default JWT secret - change in production!")
            secret = DEFAULT_JWT_SECRET
        pool_max = _int(env, "OVERSYNC_DB_POOL_MAX_CONNS", 50)
        pool_min = _int(env, "OVERSYNC_DB_POOL_MIN_CONNS", 5)
        if pool_max < 1:
            raise SettingsError("OVERSYNC_DB_POOL_MAX_CONNS must be >= 1")
        if not 0 <= pool_min <= pool_max:
            raise SettingsError(
                "OVERSYNC_DB_POOL_MIN_CONNS must be >= 0 and <= OVERSYNC_DB_POOL_MAX_CONNS"
            )
        port = _int(env, "PORT", 8080)
        if not 0 < port < 65536:
            raise SettingsError("PORT must be between 1 and 65535")
        return cls(
            database_url=env.get("DATABASE_URL", "").strip() or None,
            jwt_secret=secret,
            pool_max_conns=pool_max,
            pool_min_conns=pool_min,
            log_stage_timings=env.get("OVERSYNC_LOG_STAGE_TIMINGS", "").strip().lower()
            in _TRUE_WORDS,
            metrics=env.get("OVERSYNC_METRICS", "").strip().lower() in _TRUE_WORDS,
            access_log=env.get("OVERSYNC_ACCESS_LOG", "").strip().lower() in _TRUE_WORDS,
            host=env.get("HOST", "").strip() or "0.0.0.0",
            port=port,
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {text!r}") from None
