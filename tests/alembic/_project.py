"""A throwaway Alembic project for the migration tests, driven through ``alembic.command``.

``env.py`` is Alembic's async pattern (``connection.run_sync``) because only asyncpg is
installed. The target metadata and the URL come from ``Config.attributes`` so one project can
be pointed at several model versions and databases. Alembic commands are synchronous and
``env.py`` calls ``asyncio.run``, so async tests run them with :func:`run_command` in a thread.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

ENV_PY = textwrap.dedent(
    """
    import asyncio

    from alembic import context
    from sqlalchemy.ext.asyncio import create_async_engine

    import alembic_ext

    config = context.config
    target_metadata = config.attributes["target_metadata"]


    def run_migrations_offline() -> None:
        context.configure(
            url=config.attributes["url"],
            literal_binds=True,
            **alembic_ext.context_options(target_metadata),
        )
        with context.begin_transaction():
            context.run_migrations()


    def do_run_migrations(connection) -> None:
        context.configure(connection=connection, **alembic_ext.context_options(target_metadata))
        with context.begin_transaction():
            context.run_migrations()


    async def run_async_migrations() -> None:
        engine = create_async_engine(config.attributes["url"])
        try:
            async with engine.connect() as connection:
                await connection.run_sync(do_run_migrations)
        finally:
            await engine.dispose()


    if context.is_offline_mode():
        run_migrations_offline()
    else:
        asyncio.run(run_async_migrations())
    """
)


def make_project(root: Path, url: str, metadata: sa.MetaData) -> Config:
    """``alembic init`` into ``root`` and replace env.py with the async, attribute-driven one."""
    script_location = root / "migrations"
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(script_location))
    command.init(config, str(script_location), template="generic")
    (script_location / "env.py").write_text(ENV_PY)
    config.attributes["url"] = url
    config.attributes["target_metadata"] = metadata
    return config


def use(config: Config, metadata: sa.MetaData) -> Config:
    config.attributes["target_metadata"] = metadata
    return config


def revision_text(config: Config, rev_id: str) -> str:
    path = next(Path(config.get_main_option("script_location") or "").glob(f"versions/{rev_id}_*"))
    return path.read_text()


def body(text: str, function: str) -> str:
    """The statements of ``upgrade``/``downgrade`` in a migration file, dedented."""
    start = text.index(f"def {function}() -> None:")
    rest = text[start:].split("\n", 1)[1]
    end = rest.find("\n\ndef ")
    block = rest if end < 0 else rest[:end]
    return textwrap.dedent(block).strip()


async def run_command(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a synchronous Alembic command off the event loop (env.py calls asyncio.run)."""
    return await asyncio.to_thread(fn, *args, **kwargs)
