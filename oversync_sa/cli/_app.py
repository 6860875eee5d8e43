"""The typer application: one command per module, assembled here."""

from __future__ import annotations

import typer

from oversync_sa.cli.check_schema import check_schema
from oversync_sa.cli.prune import prune
from oversync_sa.cli.serve import serve
from oversync_sa.cli.simulate import simulate
from oversync_sa.cli.status import status

__all__ = ["build_app"]


def build_app() -> typer.Typer:
    """A fresh app (tests build their own, so no state leaks between invocations)."""
    app = typer.Typer(
        name="oversync-sa",
        help="Operate oversync-sa: serve, validate schemas, inspect and prune servers.",
        no_args_is_help=True,
        # Our commands report their own errors; typer's pretty tracebacks would leak locals.
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.command("serve")(serve)
    app.command("check-schema")(check_schema)
    app.command("status")(status)
    app.command("simulate", context_settings={"ignore_unknown_options": True})(simulate)
    app.command("prune")(prune)
    return app
