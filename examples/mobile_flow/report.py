"""Progress while running, and the summary afterwards: console (rich when installed, plain
text otherwise), JSON and a self-contained HTML page with an inline SVG timing chart."""

from __future__ import annotations

import html
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from examples.mobile_flow.context import ScenarioSpec
from examples.mobile_flow.runner import ScenarioResult

__all__ = ["ConsoleProgress", "render_summary", "write_html", "write_json"]

_MARK = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}
_STYLE = {"passed": "green", "failed": "bold red", "skipped": "yellow"}
_COLOR = {"passed": "#2e9d57", "failed": "#d0393e", "skipped": "#d9a21b"}


def _rich_console(stream: TextIO) -> Any:
    """A ``rich`` console, or ``None`` when rich is missing (it is the optional ``cli`` extra)."""
    try:
        from rich.console import Console
    except ImportError:
        return None
    # Off a terminal (CI logs, pipes) rich would wrap at 80 columns; keep rows on one line.
    width = None if stream.isatty() else 200
    return Console(file=stream, highlight=False, width=width)


class ConsoleProgress:
    """One line per scenario start, step and result; a spinner with rich on a terminal."""

    def __init__(self, stream: TextIO | None = None, *, plain: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.console = None if plain else _rich_console(self.stream)
        self._status: Any = None

    def started(self, spec: ScenarioSpec, label: str) -> None:
        if self.console is not None:
            self.console.print(f"[bold cyan]>[/] [bold]{label}[/] [dim]- {spec.description}[/]")
            if self.console.is_terminal and self._status is None:
                self._status = self.console.status(f"{label}: starting")
                self._status.start()
        else:
            print(f"> {label} - {spec.description}", file=self.stream, flush=True)

    def step(self, scenario: str, message: str) -> None:
        if self.console is not None:
            if self._status is not None:
                self._status.update(f"{scenario}: {message}")
            self.console.print(f"    [dim]{scenario}:[/] {message}")
        else:
            print(f"    {scenario}: {message}", file=self.stream, flush=True)

    def finished(self, result: ScenarioResult) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        detail = f" - {result.error}" if result.error else ""
        line = f"{_MARK[result.status]} {result.name} ({result.seconds:.2f}s){detail}"
        if self.console is not None:
            from rich.markup import escape

            self.console.print(f"  [{_STYLE[result.status]}]{escape(line)}[/]")
        else:
            print(f"  {line}", file=self.stream, flush=True)


def _totals(results: list[ScenarioResult]) -> dict[str, Any]:
    return {
        "passed": sum(r.status == "passed" for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "skipped": sum(r.status == "skipped" for r in results),
        "seconds": round(sum(r.seconds for r in results), 3),
        "rows_uploaded": sum(r.rows_uploaded for r in results),
        "rows_downloaded": sum(r.rows_downloaded for r in results),
        "requests": sum(r.requests for r in results),
    }


def render_summary(
    results: list[ScenarioResult], stream: TextIO | None = None, *, plain: bool = False
) -> None:
    """The end-of-run table: result, time, rows up/down, requests, error or notes."""
    stream = stream or sys.stdout
    totals = _totals(results)
    console = None if plain else _rich_console(stream)
    headline = (
        f"{totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['skipped']} skipped in {totals['seconds']:.1f}s; "
        f"{totals['rows_uploaded']} rows up, {totals['rows_downloaded']} rows down, "
        f"{totals['requests']} requests"
    )
    if console is not None:
        from rich.table import Table

        table = Table(title="mobile_flow summary", title_justify="left")
        for column, justify in (
            ("Scenario", "left"),
            ("Result", "left"),
            ("Time", "right"),
            ("Rows up", "right"),
            ("Rows down", "right"),
            ("Requests", "right"),
            ("Details", "left"),
        ):
            table.add_column(
                column,
                justify=justify,  # type: ignore[arg-type]
                no_wrap=column != "Details",
            )
        for r in results:
            table.add_row(
                r.name,
                f"[{_STYLE[r.status]}]{_MARK[r.status]}[/]",
                f"{r.seconds:.2f}s",
                str(r.rows_uploaded),
                str(r.rows_downloaded),
                str(r.requests),
                r.error or "; ".join(r.notes),
            )
        console.print(table)
        style = "bold green" if totals["failed"] == 0 else "bold red"
        console.print(f"[{style}]{headline}[/]")
        return
    width = max((len(r.name) for r in results), default=8)
    print(
        f"{'Scenario':<{width}}  Result  {'Time':>8}  {'Up':>6}  {'Down':>6}  {'Reqs':>5}",
        file=stream,
    )
    for r in results:
        print(
            f"{r.name:<{width}}  {_MARK[r.status]:<6}  {r.seconds:>7.2f}s  "
            f"{r.rows_uploaded:>6}  {r.rows_downloaded:>6}  {r.requests:>5}  "
            f"{r.error or '; '.join(r.notes)}",
            file=stream,
        )
    print(headline, file=stream, flush=True)


def report_document(results: list[ScenarioResult], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "generated_at": datetime.now(UTC).isoformat(),
        "totals": _totals(results),
        "scenarios": [r.as_dict() for r in results],
    }


def write_json(path: Path, results: list[ScenarioResult], meta: dict[str, Any]) -> None:
    path.write_text(json.dumps(report_document(results, meta), indent=2) + "\n")


def timing_svg(results: list[ScenarioResult]) -> str:
    """A horizontal bar per scenario, length proportional to its time, colour by result."""
    bar_h, gap, label_w, chart_w = 18, 6, 260, 460
    longest = max((r.seconds for r in results), default=0.0) or 1.0
    height = len(results) * (bar_h + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + chart_w + 70}" '
        f'height="{height}" role="img" aria-label="scenario timings">'
    ]
    for i, r in enumerate(results):
        y = gap + i * (bar_h + gap)
        width = max(2.0, chart_w * r.seconds / longest)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_h - 5}" text-anchor="end" '
            f'font-size="12">{html.escape(r.name)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{width:.1f}" height="{bar_h}" '
            f'fill="{_COLOR[r.status]}"><title>{html.escape(r.name)}: {r.seconds:.2f}s '
            f"({r.status})</title></rect>"
            f'<text x="{label_w + width + 6:.1f}" y="{y + bar_h - 5}" font-size="12">'
            f"{r.seconds:.2f}s</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def write_html(path: Path, results: list[ScenarioResult], meta: dict[str, Any]) -> None:
    doc = report_document(results, meta)
    totals = doc["totals"]
    rows = "".join(
        f"<tr><td>{html.escape(r.name)}</td>"
        f'<td style="color:{_COLOR[r.status]};font-weight:bold">{_MARK[r.status]}</td>'
        f"<td>{r.seconds:.2f}s</td><td>{r.rows_uploaded}</td><td>{r.rows_downloaded}</td>"
        f"<td>{r.requests}</td><td>{html.escape(r.error or '; '.join(r.notes))}</td></tr>"
        for r in results
    )
    meta_rows = "".join(
        f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in meta.items()
    )
    path.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mobile_flow report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
th{{background:#f3f3f3}}</style></head><body>
<h1>mobile_flow report</h1>
<p>{totals["passed"]} passed, {totals["failed"]} failed, {totals["skipped"]} skipped in
{totals["seconds"]:.1f}s &middot; {totals["rows_uploaded"]} rows uploaded,
{totals["rows_downloaded"]} rows downloaded, {totals["requests"]} requests</p>
<ul>{meta_rows}<li><b>generated</b>: {html.escape(doc["generated_at"])}</li></ul>
<h2>Timings</h2>{timing_svg(results)}
<h2>Scenarios</h2><table><tr><th>Scenario</th><th>Result</th><th>Time</th><th>Rows up</th>
<th>Rows down</th><th>Requests</th><th>Details</th></tr>{rows}</table>
</body></html>
""")
