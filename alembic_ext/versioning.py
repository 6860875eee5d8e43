"""Derive the server's ``max_supported_schema_version`` from the Alembic revision chain.

The server advertises ``schema_version`` in ``GET /sync/capabilities`` (SERVER.md §6.4); it is
the only place the protocol carries a schema version, and enforcing it is the client's side of
the contract (the Go client does not read it). Tying it to migrations keeps it from being
forgotten:

* by default the version is the number of revisions from base up to and including the given
  revision (a linear history is required), so every migration bumps it;
* a migration that should set the version explicitly — typically to leave purely server-side
  migrations (an index, a grant) out of the count — declares a module-level integer
  ``oversync_schema_version = N``. When any revision on the chain declares one, the version is
  the marker of the newest revision that declares it. Markers must not decrease towards head.

Use it when building the service::

    from alembic.config import Config
    version = alembic_ext.schema_version(Config("alembic.ini"))
    config = ServiceConfig.from_models(Base, max_supported_schema_version=version)
"""

from __future__ import annotations

from typing import Final

from alembic.config import Config
from alembic.script import Script, ScriptDirectory

from oversync_sa.errors import ConfigurationError

__all__ = ["SCHEMA_VERSION_MARKER", "schema_version"]

#: Module-level name a migration uses to pin the schema version explicitly.
SCHEMA_VERSION_MARKER: Final = "oversync_schema_version"


def _chain(scripts: ScriptDirectory, revision: str) -> list[Script]:
    heads = scripts.get_heads() if revision == "head" else [revision]
    if not heads:
        return []
    if len(heads) != 1:
        raise ConfigurationError(
            f"schema_version needs a single head revision, found {sorted(heads)}; merge first"
        )
    chain: list[Script] = []
    for script in scripts.iterate_revisions(heads[0], "base"):
        if script.is_merge_point:
            raise ConfigurationError(
                f"schema_version needs a linear history; {script.revision} is a merge point"
            )
        chain.append(script)
    chain.reverse()
    return chain


def _marker(script: Script) -> int | None:
    value = getattr(script.module, SCHEMA_VERSION_MARKER, None)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(
            f"{script.revision}: {SCHEMA_VERSION_MARKER} must be a positive integer, got {value!r}"
        )
    return value


def schema_version(source: Config | ScriptDirectory, revision: str = "head") -> int:
    """The schema version of ``revision`` (default: the single head); 1 for an empty history."""
    scripts = source if isinstance(source, ScriptDirectory) else ScriptDirectory.from_config(source)
    chain = _chain(scripts, revision)
    version: int | None = None
    for script in chain:
        marker = _marker(script)
        if marker is None:
            continue
        if version is not None and marker < version:
            raise ConfigurationError(
                f"{script.revision}: {SCHEMA_VERSION_MARKER} {marker} is lower than the "
                f"earlier marker {version}"
            )
        version = marker
    if version is not None:
        return version
    return max(len(chain), 1)
