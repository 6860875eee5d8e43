"""Importing the repository's ``examples`` package, with a clear message when it is absent.

The reference server and the simulator live in ``examples/``, which is part of the source
repository but not of the installed wheel, so the commands built on them only work from a
checkout (or with the checkout on ``PYTHONPATH``).
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from oversync_sa.cli._common import CliError

__all__ = ["import_example"]

# Third-party packages the examples need beyond the core; the hint names the extra to install.
_EXTRAS_HINT = "pip install 'oversync-sa[all]'"


def import_example(module: str, *, missing_message: str) -> ModuleType:
    """Import ``module`` (``examples....``) or raise :class:`CliError` saying what is missing.

    The working directory goes on ``sys.path`` first: console scripts do not put it there,
    and "run it from the repository root" is the documented way to use the examples.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == "examples" or module.startswith(missing + ".") or missing == module:
            # The message says everything; the import traceback would add nothing.
            raise CliError(missing_message) from None
        raise CliError(f"{module} needs the Python package {missing!r}: {_EXTRAS_HINT}") from exc
