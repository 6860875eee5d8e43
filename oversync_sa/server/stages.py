"""Stage timings (SERVER.md §7.5): where an operation spends its time, for an optional recorder.

A :class:`StageTiming` is handed to ``ServiceConfig.stage_metrics`` (if set) and/or logged at
DEBUG on ``oversync_sa.server.stages`` (if ``ServiceConfig.log_stage_timings``). When neither
is configured :func:`stage_clock` returns a clock whose methods do nothing, so uninstrumented
deployments pay one attribute check per operation, not a ``perf_counter`` per stage.

The recorder runs synchronously on the request path: it must be cheap and must not raise (an
exception from it is logged and swallowed, because metrics must never fail a sync request).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Final

__all__ = ["StageClock", "StageRecorder", "StageTiming", "stage_clock"]

_log: Final = logging.getLogger("oversync_sa.server.stages")


@dataclass(frozen=True, slots=True)
class StageTiming:
    """One timed stage of one operation.

    ``operation`` is e.g. ``"pull"``; ``stage`` e.g. ``"load_bundles"`` or ``"total"``.
    ``duration`` is in seconds; ``count`` is what the stage produced (rows, bundles) when that
    is meaningful, else 0; ``attempt`` is 1-based for retried transactions; ``error`` is true
    when the stage failed for any reason other than the service shutting down.
    """

    operation: str
    stage: str
    duration: float
    count: int = 0
    attempt: int = 1
    error: bool = False


StageRecorder = Callable[[StageTiming], None]


class StageClock:
    """Times the stages of one operation and reports each to the configured sinks."""

    __slots__ = ("_log_enabled", "_operation", "_recorder", "attempt")

    def __init__(self, operation: str, recorder: StageRecorder | None, log_enabled: bool) -> None:
        self._operation = operation
        self._recorder = recorder
        self._log_enabled = log_enabled
        self.attempt = 1

    @property
    def enabled(self) -> bool:
        return self._recorder is not None or self._log_enabled

    def record(self, stage: str, duration: float, *, count: int = 0, error: bool = False) -> None:
        if not self.enabled:
            return
        timing = StageTiming(self._operation, stage, duration, count, self.attempt, error)
        if self._log_enabled:
            _log.debug(
                "stage %s.%s took %.3f ms (count=%d attempt=%d error=%s)",
                timing.operation, timing.stage, timing.duration * 1000.0,
                timing.count, timing.attempt, timing.error,
            )
        if self._recorder is not None:
            try:
                self._recorder(timing)
            except Exception:  # metrics must never fail a request
                _log.exception("stage recorder raised for %s.%s", timing.operation, timing.stage)

    def stage(
        self, name: str, *, expected: tuple[type[BaseException], ...] = ()
    ) -> AbstractContextManager[_Count]:
        """Time the ``with`` body as stage ``name``; set ``.value`` on the yielded counter.

        Exceptions of the ``expected`` types (e.g. service shutdown) are not flagged as errors.
        A disabled clock hands out one shared do-nothing context: no timer, no allocation.
        """
        if not self.enabled:
            return _UNTIMED
        return self._timed(name, expected)

    @contextmanager
    def _timed(self, name: str, expected: tuple[type[BaseException], ...]) -> Iterator[_Count]:
        counter = _Count()
        started = time.perf_counter()
        try:
            yield counter
        except BaseException as exc:
            failed = not isinstance(exc, expected)
            self.record(name, time.perf_counter() - started, count=counter.value, error=failed)
            raise
        self.record(name, time.perf_counter() - started, count=counter.value)


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class _Untimed(AbstractContextManager[_Count]):
    """The stage context of a disabled clock; its counter absorbs writes nobody reads."""

    __slots__ = ("_counter",)

    def __init__(self) -> None:
        self._counter = _Count()

    def __enter__(self) -> _Count:
        return self._counter

    def __exit__(self, *exc_info: object) -> None:
        return None


_UNTIMED: Final = _Untimed()


def stage_clock(operation: str, recorder: StageRecorder | None, log_enabled: bool) -> StageClock:
    """A clock for ``operation`` reporting to ``recorder`` and/or the debug log."""
    return StageClock(operation, recorder, log_enabled)
