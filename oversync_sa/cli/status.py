"""``oversync-sa status URL``: ``GET {URL}/syncx/status`` of a running server, as a table.

Works against any server of the contract (oversync-sa or go-oversync): the body is shown as
received, so members this version does not know are displayed too instead of dropped.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from oversync_sa.cli import EXIT_FAILED, EXIT_OK
from oversync_sa.cli._common import (
    CliError,
    JsonOpt,
    VerboseOpt,
    console,
    run_command,
)

__all__ = ["fetch_status", "status"]

STATUS_PATH = "/syncx/status"


def fetch_status(base_url: str, timeout: float) -> tuple[str, dict[str, Any]]:
    """The raw body and its decoded object; every failure is a :class:`CliError` (exit 2)."""
    import httpx

    parts = urlsplit(base_url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise CliError(f"URL must be an http(s):// server address, got {base_url!r}")
    url = base_url.rstrip("/") + STATUS_PATH
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc or type(exc).__name__}") from exc
    if response.status_code == 404:
        raise CliError(f"{url} answered 404: is this an oversync server?")
    try:
        body = response.json()
    except ValueError as exc:
        raise CliError(f"{url} answered {response.status_code} with a non-JSON body") from exc
    if response.status_code != 200 or not isinstance(body, dict) or "status" not in body:
        detail = body.get("error", "") if isinstance(body, dict) else ""
        raise CliError(
            f"{url} answered {response.status_code} {detail}".rstrip()
            + ": not a sync status object"
        )
    return response.text, body


def status(
    url: Annotated[str, typer.Argument(metavar="URL", help="Server base URL.")],
    as_json: JsonOpt = False,
    timeout: Annotated[float, typer.Option(help="Request timeout in seconds.", min=0.1)] = 10.0,
    verbose: VerboseOpt = False,
) -> None:
    """Show a server's /syncx/status.

    Exit code: 0 healthy, 1 answering but unhealthy (e.g. draining), 2 not queryable.
    """

    def body() -> int:
        raw, decoded = fetch_status(url, timeout)
        if as_json:
            typer.echo(raw)
        else:
            console().print(_table(url, decoded))
        return EXIT_OK if decoded.get("status") == "healthy" else EXIT_FAILED

    run_command(verbose, body)


def _table(url: str, body: dict[str, Any]) -> Table:
    healthy = body.get("status") == "healthy"
    colour = "green" if healthy else "red"
    title = f"{escape(url)} [{colour}]{escape(str(body.get('status')))}[/]"
    table = Table(title=title, title_justify="left")
    table.add_column("Field", style="bold")
    table.add_column("Value", overflow="fold")
    for key, value in body.items():
        if key == "status":
            continue
        # Text cells: the body is data from the network, never rich markup.
        table.add_row(Text(key), Text(_render(value)))
    return table


def _render(value: Any) -> str:
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_render(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
