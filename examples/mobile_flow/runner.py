"""Run scenarios and collect one :class:`ScenarioResult` each."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from examples.mobile_flow.context import (
    ProgressSink,
    ScenarioContext,
    ScenarioFailure,
    ScenarioSkipped,
    ScenarioSpec,
    SimConfig,
)
from examples.mobile_flow.net import TokenSource
from examples.mobile_flow.verifier import Verifier

__all__ = ["Progress", "ScenarioResult", "Simulator"]

_log = logging.getLogger("examples.mobile_flow")


@dataclass
class ScenarioResult:
    name: str
    title: str
    status: str  # "passed" | "failed" | "skipped"
    seconds: float
    rows_uploaded: int = 0
    rows_downloaded: int = 0
    requests: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress(ProgressSink, Protocol):
    def started(self, spec: ScenarioSpec, label: str) -> None: ...
    def finished(self, result: ScenarioResult) -> None: ...


class Simulator:
    """Owns the token source and the PostgreSQL verifier for a whole run."""

    def __init__(self, config: SimConfig, progress: Progress) -> None:
        self.config = config
        self.progress = progress
        self.tokens = TokenSource(config.server_url, config.jwt_secret)
        self._verifier: Verifier | None = None

    async def __aenter__(self) -> Simulator:
        self.config.workdir.mkdir(parents=True, exist_ok=True)
        self._verifier = await Verifier.connect(self.config.db_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._verifier is not None:
            await self._verifier.close()

    @property
    def verifier(self) -> Verifier:
        assert self._verifier is not None, "use 'async with Simulator(...)'"
        return self._verifier

    async def cleanup_server(self) -> list[str]:
        """go-oversync's ``--cleanup``: empty the business and sync state tables."""
        return await self.verifier.truncate_all()

    async def run(self, specs: list[ScenarioSpec], parallel: int = 1) -> list[ScenarioResult]:
        """Run ``specs`` one after another; with ``parallel > 1`` each runs for that many
        independent users at once (like go-oversync's ``--parallel``)."""
        results: list[ScenarioResult] = []
        for spec in specs:
            if parallel <= 1:
                results.append(await self.run_one(spec))
                continue
            batch = await asyncio.gather(
                *(self.run_one(spec, suffix=f"-u{i:03d}") for i in range(1, parallel + 1))
            )
            results.extend(batch)
        return results

    async def run_one(self, spec: ScenarioSpec, suffix: str = "") -> ScenarioResult:
        label = spec.name + (f"[{suffix.lstrip('-')}]" if suffix else "")
        ctx = ScenarioContext(
            label, self.config, self.tokens, self.verifier, self.progress, user_suffix=suffix
        )
        self.progress.started(spec, label)
        started = time.monotonic()
        status, error = "passed", None
        try:
            await spec.run(ctx)
        except ScenarioSkipped as exc:
            status, error = "skipped", str(exc)
        except (ScenarioFailure, AssertionError) as exc:
            status, error = "failed", str(exc) or type(exc).__name__
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            _log.debug("scenario %s crashed:\n%s", label, traceback.format_exc())
            if self.config.verbose:
                ctx.step(traceback.format_exc())
        finally:
            seconds = time.monotonic() - started
            await ctx.close_devices()
        result = ScenarioResult(
            name=label,
            title=spec.title,
            status=status,
            seconds=round(seconds, 3),
            rows_uploaded=ctx.traffic.rows_uploaded,
            rows_downloaded=ctx.traffic.rows_downloaded,
            requests=sum(ctx.traffic.requests.values()),
            error=error,
            notes=ctx.notes,
        )
        self.progress.finished(result)
        return result
