"""What every command shares: exit-code handling, error reporting, model and database access.

Commands raise :class:`CliError` for every expected failure; :func:`run_command` turns it into
one red line on stderr and the exit code it carries. Tracebacks are printed only with
``--verbose``, because a CLI user needs the reason, not our call stack.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.markup import escape

from oversync_sa.cli import EXIT_ERROR
from oversync_sa.errors import OversyncError, UnsupportedSchemaError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from oversync_sa.server.config import ServiceConfig

__all__ = [
    "CliError",
    "JsonOpt",
    "ModelsOpt",
    "SchemaOpt",
    "VerboseOpt",
    "asyncpg_engine_url",
    "console",
    "create_engine",
    "err_console",
    "import_object",
    "print_json",
    "redact_url",
    "run_async",
    "run_command",
    "service_config",
]

_T = TypeVar("_T")


def console() -> Console:
    """The stdout console for results.

    Built per use rather than once at import: rich reads the terminal size and ``COLUMNS``
    when a console is created, and a long-lived one would keep the size of the first caller.
    """
    return Console()


def err_console() -> Console:
    """The stderr console for diagnostics (see :func:`console`)."""
    return Console(stderr=True)


VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show tracebacks and other details on errors.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead.")]
ModelsOpt = Annotated[
    str,
    typer.Option(
        "--models",
        "-m",
        metavar="MODULE:BASE",
        help="Declarative base (or MetaData) of the synced models, e.g. myapp.models:Base.",
    ),
]
SchemaOpt = Annotated[
    str,
    typer.Option("--schema", "-s", help="PostgreSQL schema of the business tables."),
]


class CliError(Exception):
    """An expected failure: ``message`` is shown as is, the process exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def run_command(verbose: bool, body: Callable[[], int]) -> NoReturn:
    """Run one command body and exit with its code; expected errors never show a traceback."""
    try:
        code = body()
    except CliError as exc:
        err_console().print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if verbose and exc.__cause__ is not None:
            _print_traceback(exc.__cause__)
        elif exc.__cause__ is not None:
            err_console().print("[dim](run with --verbose for details)[/]")
        code = exc.exit_code
    except OversyncError as exc:
        # The library's own errors carry a message written for users.
        err_console().print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        if verbose:
            _print_traceback(exc)
        code = EXIT_ERROR
    except Exception as exc:
        # A bug or an unanticipated environment problem: still no wall of text by default.
        err_console().print(
            f"[bold red]error:[/] unexpected {type(exc).__name__}: {escape(str(exc))}",
            highlight=False,
        )
        if verbose:
            _print_traceback(exc)
        else:
            err_console().print("[dim](run with --verbose for the traceback)[/]")
        code = EXIT_ERROR
    raise typer.Exit(code)


def _print_traceback(exc: BaseException) -> None:
    from rich.traceback import Traceback

    err_console().print(Traceback.from_exception(type(exc), exc, exc.__traceback__))


def print_json(value: Any) -> None:
    """One JSON document on stdout, keys sorted so output is stable for scripts and diffs."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------ models


def import_object(spec: str) -> Any:
    """Resolve ``"package.module:attr.path"`` the way uvicorn resolves its app argument.

    :class:`UnsupportedSchemaError` raised while the module declares its models propagates;
    every other import problem becomes a :class:`CliError`.

    The working directory is put on ``sys.path`` first: a console script does not have it
    there, yet ``myapp.models:Base`` is naturally meant relative to the project directory.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise CliError(f"--models must look like 'package.module:Base', got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import module {module_name!r}: {exc}") from exc
    except UnsupportedSchemaError:
        raise  # models rejected at declaration: check-schema lists these violations
    except Exception as exc:
        raise CliError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise CliError(f"module {module_name!r} has no attribute {attr_path!r}") from exc
    return target


# ---------------------------------------------------------------------------- database


def asyncpg_engine_url(url: str) -> tuple[str, dict[str, Any]]:
    """A ``postgres[ql][+asyncpg]://`` URL as SQLAlchemy's asyncpg URL plus connect args.

    libpq's ``sslmode`` query parameter becomes asyncpg's ``ssl`` argument (asyncpg rejects
    ``sslmode``), so the URLs users already have for psql work unchanged.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise CliError(
            f"DATABASE_URL must be a postgresql:// URL, got scheme {parts.scheme or '(none)'!r}"
        )
    query = dict(parse_qsl(parts.query))
    connect_args: dict[str, Any] = {"server_settings": {"timezone": "UTC"}}
    sslmode = query.pop("sslmode", None)
    if sslmode is not None:
        connect_args["ssl"] = sslmode
    rebuilt = urlunsplit(
        ("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), parts.fragment)
    )
    return rebuilt, connect_args


def redact_url(url: str) -> str:
    """``url`` with its password replaced, safe to print in error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def run_async(coro: Coroutine[Any, Any, _T], *, database_url: str) -> _T:
    """Run ``coro`` to completion, turning database and network failures into :class:`CliError`.

    Library errors (:class:`OversyncError`) are reported by their message; anything else keeps
    propagating to :func:`run_command` as unexpected.
    """
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    where = redact_url(database_url)
    try:
        return asyncio.run(coro)
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise CliError(f"database error at {where}: {reason}") from exc
    except (SQLAlchemyError, OSError) as exc:
        raise CliError(f"cannot use the database at {where}: {exc}") from exc
    except OversyncError as exc:
        raise CliError(str(exc)) from exc


def create_engine(database_url: str) -> AsyncEngine:
    """A short-lived engine for one command: no pool, because a command opens one or two
    connections and must not leave idle ones behind on the server."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    url, connect_args = asyncpg_engine_url(database_url)
    return create_async_engine(url, poolclass=NullPool, connect_args=connect_args)


def service_config(models: str, schema: str, **overrides: Any) -> ServiceConfig:
    """``ServiceConfig.from_models`` for ``--models``/``--schema``.

    :class:`~oversync_sa.errors.UnsupportedSchemaError` (models that cannot be synced at all)
    propagates, so ``check-schema`` can list those violations like database ones; other
    configuration problems become a usage error.
    """
    from oversync_sa.errors import ConfigurationError
    from oversync_sa.server.config import ServiceConfig

    base = import_object(models)
    try:
        return ServiceConfig.from_models(base, schema=schema, **overrides)
    except ConfigurationError as exc:
        raise CliError(f"--models {models}: {exc}") from exc
