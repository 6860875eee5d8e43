"""``oversync-sa``: the command line of oversync-sa (``pip install 'oversync-sa[cli]'``).

Commands, one module each: ``serve``, ``check-schema``, ``status``, ``simulate``, ``prune``.

Exit codes are the same for every command:

* ``0`` success (schema valid, server healthy, prune done);
* ``1`` the check ran and found a problem (schema violations, server unhealthy);
* ``2`` the command could not run: bad usage, unreachable database or server, missing extras.

typer and rich are imported only by this package's submodules, and only when :func:`main`
runs, so ``import oversync_sa`` (and even ``import oversync_sa.cli``) never needs them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_OK", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (the console script exits with it)."""
    try:
        from oversync_sa.cli._app import build_app
    except ModuleNotFoundError as exc:
        if exc.name not in {"typer", "rich", "click"}:
            raise
        print(
            f"oversync-sa: the command line needs {exc.name!r}; "
            "install it with: pip install 'oversync-sa[cli]'",
            file=sys.stderr,
        )
        return EXIT_ERROR
    app = build_app()
    try:
        app(args=list(sys.argv[1:] if argv is None else argv), standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    return EXIT_OK
