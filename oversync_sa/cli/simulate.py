"""``oversync-sa simulate``: run the mobile-flow simulator (``examples.mobile_flow``).

The simulator is written in parallel with this command. Until its package exposes an entry
point (``main`` in the package or in its ``__main__`` module) the command says it is not
available yet and exits with 2; afterwards every argument after ``simulate`` is handed to it.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from oversync_sa.cli._common import CliError, VerboseOpt, run_command
from oversync_sa.cli._examples import import_example

__all__ = ["SIMULATOR_MODULE", "find_entry_point", "simulate"]

SIMULATOR_MODULE = "examples.mobile_flow"
_NOT_YET = (
    f"simulate is not available yet: the mobile-flow simulator ({SIMULATOR_MODULE}) has no "
    "entry point in this checkout"
)


def find_entry_point() -> Callable[..., Any]:
    """The simulator's ``main``: from the package itself, else from its ``__main__``."""
    package = import_example(SIMULATOR_MODULE, missing_message=_NOT_YET)
    entry = getattr(package, "main", None)
    if not callable(entry):
        try:
            entry = getattr(importlib.import_module(f"{SIMULATOR_MODULE}.__main__"), "main", None)
        except ModuleNotFoundError as exc:
            if exc.name is None or not exc.name.startswith(SIMULATOR_MODULE):
                raise CliError(f"the simulator needs the Python package {exc.name!r}") from exc
            entry = None
    if not callable(entry):
        raise CliError(_NOT_YET)
    found: Callable[..., Any] = entry
    return found


def _call(entry: Callable[..., Any], argv: list[str]) -> Any:
    """``main(argv)`` when it takes arguments, else ``main()`` with ``sys.argv`` set."""
    if inspect.signature(entry).parameters:
        return entry(argv)
    saved = sys.argv
    sys.argv = ["oversync-sa simulate", *argv]
    try:
        return entry()
    finally:
        sys.argv = saved


def simulate(
    verbose: VerboseOpt = False,
    args: Annotated[
        list[str] | None,
        typer.Argument(help="Arguments passed on to the simulator.", show_default=False),
    ] = None,
) -> None:
    """Run the mobile-flow simulator (devices syncing against a server).

    Exit code: the simulator's own; 2 when it is not available.
    """

    def body() -> int:
        entry = find_entry_point()
        try:
            code = _call(entry, list(args or ()))
        except SystemExit as exc:  # argparse-style mains exit instead of returning
            code = exc.code
        return code if isinstance(code, int) else 0

    run_command(verbose, body)
