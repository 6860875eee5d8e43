"""``oversync-sa serve``: run the reference server (``examples.litestar_server``).

Everything is delegated to the example's own ``serve()``; this command only maps options onto
its :class:`Settings` (which also reads go-oversync's environment variables, e.g.
``JWT_SECRET``). Without ``--database-url`` (or ``DATABASE_URL``) the example starts an embedded
PostgreSQL in ``./.oversync/pgdata`` and keeps its data between runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from oversync_sa.cli import EXIT_OK
from oversync_sa.cli._common import CliError, VerboseOpt, run_command
from oversync_sa.cli._examples import import_example

__all__ = ["serve"]

_NOT_IN_WHEEL = (
    "the reference server is not available: it lives in the repository's examples/ "
    "package, which is not part of the installed oversync-sa package. Run this command "
    "from the root of an oversync-sa checkout, or mount "
    "oversync_sa.litestar.plugin.OversyncPlugin in your own Litestar app"
)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default: $HOST or 0.0.0.0).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port to listen on (default: $PORT or 8080).", min=1, max=65535),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL URL (default: $DATABASE_URL, else an embedded PostgreSQL).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data directory of the embedded PostgreSQL (default .oversync/pgdata)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Server processes behind the one port, over one database (each a complete "
            "server with its own pool; watch wake-ups cross them through PostgreSQL).",
            min=1,
        ),
    ] = 1,
    verbose: VerboseOpt = False,
) -> None:
    """Run the reference sync server until SIGINT/SIGTERM.

    Exit code: 0 clean shutdown, 2 cannot start (no examples package, bad settings, no
    PostgreSQL) or, with ``--workers`` > 1, a worker exited by itself (the others are stopped).
    """

    def body() -> int:
        server_main = import_example(
            "examples.litestar_server.__main__",
            missing_message=_NOT_IN_WHEEL,
        )
        settings_module = import_example(
            "examples.litestar_server.settings",
            missing_message=_NOT_IN_WHEEL,
        )
        try:
            settings = settings_module.Settings.from_env(os.environ)
        except settings_module.SettingsError as exc:
            raise CliError(f"invalid server configuration: {exc}") from exc
        overrides: dict[str, Any] = {
            name: value
            for name, value in (
                ("host", host),
                ("port", port),
                ("database_url", database_url),
                ("data_dir", data_dir),
            )
            if value is not None
        }
        settings = dataclasses.replace(settings, **overrides)
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if workers > 1:
            # The parent binds the port and starts PostgreSQL once; the workers inherit both.
            workers_module = import_example(
                "examples.litestar_server.workers", missing_message=_NOT_IN_WHEEL
            )
            try:
                code = asyncio.run(workers_module.supervise(settings, workers))
            except RuntimeError as exc:
                raise CliError(f"the server could not start: {exc}") from exc
            if code != 0:
                raise CliError(
                    "a server worker exited by itself; the others were stopped "
                    "(its log lines above say why)"
                )
            return EXIT_OK
        try:
            asyncio.run(server_main.serve(settings))
        except RuntimeError as exc:
            # open_database() says so when there is neither a URL nor PostgreSQL binaries.
            raise CliError(f"the server could not start: {exc}") from exc
        except SystemExit as exc:
            # uvicorn exits the process when it cannot bind; report it as a start failure.
            raise CliError(f"the server could not start (uvicorn exited with {exc.code})") from exc
        return EXIT_OK

    run_command(verbose, body)
