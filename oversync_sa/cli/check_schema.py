"""``oversync-sa check-schema``: would bootstrap accept this database? Without changing it.

Runs bootstrap's validation steps only (SERVER.md §2.2, §2.4) through
:func:`~oversync_sa.server.bootstrap_validation.load_schema_facts` and
:func:`~oversync_sa.server.bootstrap_validation.collect_violations`, inside a ``READ ONLY``
transaction: no ``sync`` layout, trigger or catalog row is created, so it is safe against
production and in CI before a deploy. Like bootstrap it lists *every* violation at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlalchemy import text

from oversync_sa.cli import EXIT_FAILED, EXIT_OK
from oversync_sa.cli._common import (
    CliError,
    JsonOpt,
    ModelsOpt,
    SchemaOpt,
    VerboseOpt,
    console,
    create_engine,
    print_json,
    run_async,
    run_command,
    service_config,
)
from oversync_sa.errors import SchemaViolation, UnsupportedSchemaError
from oversync_sa.server.bootstrap_validation import collect_violations, load_schema_facts
from oversync_sa.server.config import RegisteredTable

__all__ = ["check_schema", "validate_schema"]


async def validate_schema(
    database_url: str, tables: Sequence[RegisteredTable]
) -> list[SchemaViolation]:
    """Every bootstrap validation violation of ``tables`` in the database; writes nothing."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            # Belt and braces: the checks only read, and READ ONLY makes that a guarantee.
            await conn.execute(text("SET TRANSACTION READ ONLY"))
            facts = await conn.run_sync(load_schema_facts, tables)
            await conn.rollback()
    finally:
        await engine.dispose()
    return collect_violations(tables, facts)


def check_schema(
    database_url: Annotated[str, typer.Argument(metavar="DATABASE_URL", show_default=False)],
    models: ModelsOpt,
    schema: SchemaOpt = "business",
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Validate the live schema against the models as bootstrap would, without any DDL.

    Exit code: 0 valid, 1 violations (all of them listed), 2 usage or connection error.
    """

    def body() -> int:
        try:
            config = service_config(models, schema)
        except UnsupportedSchemaError as exc:
            # The models themselves cannot be synced: same report, no database needed.
            return _report([], list(exc.violations), as_json, source="models")
        tables = config.registered_tables
        if not tables:
            raise CliError(f"{models} declares no synced tables")
        violations = run_async(validate_schema(database_url, tables), database_url=database_url)
        return _report([t.name for t in tables], violations, as_json, source="database")

    run_command(verbose, body)


def _report(
    tables: list[str], violations: list[SchemaViolation], as_json: bool, *, source: str
) -> int:
    if as_json:
        print_json(
            {
                "valid": not violations,
                "source": source,
                "tables": tables,
                "violations": [
                    {
                        "table": v.table,
                        "rule": v.rule,
                        "constraint": v.constraint,
                        "message": v.message,
                    }
                    for v in violations
                ],
            }
        )
    elif not violations:
        console().print(
            f"[bold green]ok:[/] {len(tables)} registered table(s) can be synced: "
            + escape(", ".join(tables)),
            highlight=False,
        )
    else:
        affected = len({v.table for v in violations})
        table = Table(
            title=f"{len(violations)} violation(s) in {affected} table(s) ({source})",
            title_justify="left",
            show_lines=True,
        )
        for column in ("Table", "Rule", "Constraint", "Problem"):
            table.add_column(column, overflow="fold")
        for v in violations:
            # Text cells: names and messages are data, never rich markup.
            table.add_row(*(Text(c) for c in (v.table, v.rule, v.constraint or "", v.message)))
        console().print(table)
    return EXIT_FAILED if violations else EXIT_OK
