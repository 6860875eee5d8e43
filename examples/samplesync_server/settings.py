"""Environment of the sample server: go-oversync's ``samplesync_server`` names and defaults.

The Go sample reads ``DATABASE_URL``, ``JWT_SECRET``, ``PORT`` and ``OVERSYNC_LOG_STAGE_TIMINGS``
and hard-codes the rest (pool of 2..20 connections, app name, token lifetime). The result is the
reference server's :class:`~examples.litestar_server.settings.Settings`, so that server's
database helpers (embedded PostgreSQL, engine sizing) serve this one unchanged.

Differences, both shared with the reference server: an unset ``DATABASE_URL`` starts an embedded
PostgreSQL (database ``samplesync``, as in Go's default URL) instead of connecting to
``localhost:5432``, and ``HOST`` picks the listening address (Go always listens on all).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from examples.litestar_server.settings import Settings, SettingsError
from examples.samplesync_server.models import SCHEMA

__all__ = [
    "APP_NAME",
    "DEFAULT_JWT_SECRET",
    "Settings",
    "SettingsError",
    "TOKEN_TTL_SECONDS",
    "settings_from_env",
]

_log = logging.getLogger(__name__)

APP_NAME: Final = "samplesync-server"
DEFAULT_JWT_SECRET: Final = "dev-secret"
DEFAULT_PORT: Final = 8080
#: Lifetime of a ``/dummy-signin`` token: short, so the app's token refresh path gets exercised.
TOKEN_TTL_SECONDS: Final = 180
#: The Go sample's fixed pgx pool bounds (MinConns 2, MaxConns 20); it reads no pool variables.
POOL_MIN_CONNS: Final = 2
POOL_MAX_CONNS: Final = 20
#: Go's default URL names this database; the embedded cluster creates it.
DATABASE_NAME: Final = "samplesync"
#: Separate from the reference server's ``.oversync/pgdata`` so both examples can run at once
#: (one data directory admits one postmaster).
DATA_DIR: Final = Path(".oversync") / "samplesync-pgdata"
_TRUE_WORDS: Final = frozenset({"1", "true", "yes"})


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The sample server's settings; :class:`SettingsError` names a malformed variable.

    Go passes a malformed ``PORT`` to ``ListenAndServe`` and exits with its error; here the
    server refuses to start before touching the database, with the variable's name.
    """
    secret = env.get("JWT_SECRET", "")
    if not secret:
        # Go falls back silently; saying so costs nothing and explains pyjwt's key-length
        # warning (the 10-byte default is below HS256's recommended 32 bytes).
        _log.warning("JWT_SECRET is unset: using the sample default %r", DEFAULT_JWT_SECRET)
        secret = DEFAULT_JWT_SECRET
    return Settings(
        database_url=env.get("DATABASE_URL", "").strip() or None,
        jwt_secret=secret,
        pool_max_conns=POOL_MAX_CONNS,
        pool_min_conns=POOL_MIN_CONNS,
        log_stage_timings=env.get("OVERSYNC_LOG_STAGE_TIMINGS", "").strip().lower()
        in _TRUE_WORDS,
        host=env.get("HOST", "").strip() or "0.0.0.0",
        port=_port(env),
        business_schema=SCHEMA,
        data_dir=DATA_DIR,
        database_name=DATABASE_NAME,
    )


def _port(env: Mapping[str, str]) -> int:
    text = env.get("PORT", "").strip()
    if not text:
        return DEFAULT_PORT
    try:
        port = int(text)
    except ValueError:
        raise SettingsError(f"PORT must be an integer, got {text!r}") from None
    if not 0 < port < 65536:
        raise SettingsError("PORT must be between 1 and 65535")
    return port
