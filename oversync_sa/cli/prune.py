"""``oversync-sa prune``: one retention maintenance run (SERVER.md §7.1) with a progress bar.

Commits already keep each user's history inside the window; this catches up everyone at once,
e.g. after lowering ``retained_bundles_per_user`` or for users that stopped committing. It is
safe beside a live server (short transactions, rows held by writers are skipped) and is meant
for cron: ``--json`` prints a summary for logs and monitoring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Final

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.cli import EXIT_OK
from oversync_sa.cli._common import (
    CliError,
    JsonOpt,
    SchemaOpt,
    VerboseOpt,
    console,
    create_engine,
    print_json,
    run_async,
    run_command,
    service_config,
)
from oversync_sa.server import retention
from oversync_sa.server.config import ServiceConfig
from oversync_sa.server.retention import PruneProgress

__all__ = ["prune", "prune_database"]

# The bundles a full catch-up deletes: the progress bar's total, counted before starting.
_BACKLOG_SQL: Final = text(
    "SELECT count(*) FROM sync.bundle_log b JOIN sync.user_state u ON u.user_pk = b.user_pk"
    " WHERE b.bundle_seq <= u.next_bundle_seq - 1 - :window"
)


async def prune_database(
    database_url: str,
    config: ServiceConfig,
    *,
    users_per_transaction: int,
    max_transactions: int | None,
    show_progress: bool,
) -> PruneProgress:
    """Run :func:`oversync_sa.server.retention.prune`, optionally drawing a progress bar."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            if await conn.scalar(text("SELECT to_regclass('sync.user_state')")) is None:
                raise CliError(
                    "this database has no sync layout (sync.user_state): "
                    "bootstrap the server against it first"
                )
            backlog = int(
                await conn.scalar(_BACKLOG_SQL, {"window": config.retained_bundles_per_user}) or 0
            )
        if not show_progress:
            return await _prune(engine, config, users_per_transaction, max_transactions, None)
        with Progress(
            TextColumn("[bold]pruning history"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("bundles"),
            TimeElapsedColumn(),
            console=console(),
            transient=False,
        ) as bar:
            task = bar.add_task("prune", total=backlog)

            def advance(totals: PruneProgress) -> None:
                bar.update(task, completed=totals.bundles_deleted)

            return await _prune(engine, config, users_per_transaction, max_transactions, advance)
    finally:
        await engine.dispose()


async def _prune(
    engine: AsyncEngine,
    config: ServiceConfig,
    users_per_transaction: int,
    max_transactions: int | None,
    progress: Callable[[PruneProgress], None] | None,
) -> PruneProgress:
    return await retention.prune(
        engine,
        config,
        users_per_transaction=users_per_transaction,
        max_transactions=max_transactions,
        progress=progress,
    )


def prune(
    database_url: Annotated[str, typer.Argument(metavar="DATABASE_URL", show_default=False)],
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            "-m",
            metavar="MODULE:BASE",
            help="Synced models (optional: retention does not depend on the tables, but "
            "giving them checks that the configuration loads like the server's).",
        ),
    ] = None,
    schema: SchemaOpt = "business",
    window: Annotated[
        int,
        typer.Option(help="retained_bundles_per_user: bundles kept per user (0 = default).", min=0),
    ] = 0,
    batch: Annotated[
        int,
        typer.Option(
            help="retention_prune_batch_size: max floor advance per user and transaction "
            "(0 = default).",
            min=0,
        ),
    ] = 0,
    users_per_transaction: Annotated[
        int, typer.Option(help="Users advanced per transaction.", min=1)
    ] = 100,
    max_transactions: Annotated[
        int | None, typer.Option(help="Stop after this many transactions.", min=1)
    ] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Prune every user's retained bundle history down to the retention window.

    Exit code: 0 done (also when nothing was due), 2 usage or database error.
    """

    def body() -> int:
        config = (
            service_config(
                models, schema, retained_bundles_per_user=window, retention_prune_batch_size=batch
            )
            if models is not None
            else ServiceConfig(retained_bundles_per_user=window, retention_prune_batch_size=batch)
        )
        totals = run_async(
            prune_database(
                database_url,
                config,
                users_per_transaction=users_per_transaction,
                max_transactions=max_transactions,
                show_progress=not as_json,
            ),
            database_url=database_url,
        )
        summary = {
            "transactions": totals.transactions,
            "floors_advanced": totals.floors_advanced,
            "bundles_deleted": totals.bundles_deleted,
            "retained_bundles_per_user": config.retained_bundles_per_user,
            "retention_prune_batch_size": config.retention_prune_batch_size,
        }
        if as_json:
            print_json(summary)
        else:
            console().print(
                f"[bold green]done:[/] deleted {totals.bundles_deleted} bundle(s), advanced "
                f"{totals.floors_advanced} floor(s) in {totals.transactions} transaction(s) "
                f"(window {config.retained_bundles_per_user})",
                highlight=False,
            )
        return EXIT_OK

    run_command(verbose, body)
