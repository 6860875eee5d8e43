"""Background sync: an upload loop and a download loop (CLIENT.md §9.3), optionally driven by the
server's bundle-change watch stream (§9.4).

Started by :meth:`SyncClient.start <oversync_sa.client.client.SyncClient.start>`. Both loops call
the client's public operations, so they take the client lock like any caller; losing the race
(:class:`SyncOperationInProgressError`) or pulling while local edits await upload
(:class:`DirtyStateRejectedError`, :class:`PendingPushReplayError`) is *expected contention*:
retried after ``backoff_min``, not reported.

Timing (all from :class:`~oversync_sa.client.config.ClientConfig`):

* upload: ``push_pending`` every ``backoff_min``; after a failure wait the current backoff,
  then double it, capped at ``backoff_max``; a success resets it. New writes do not wake it;
* download (polling): ``pull_to_stable``, immediately again while the checkpoint moves, else
  after ``backoff_min``; failures back off like uploads;
* download (watch, ``bundle_change_watch_mode="auto"`` and the server advertises
  ``bundle_change_watch``): keep ``GET /sync/watch`` open and pull on each ``bundle`` event,
  plus every ``watch_fallback_interval`` as a safety net. When the stream ends or fails, pull
  once, wait the backoff and reconnect; when the endpoint is unavailable (404/405/501/503) the
  wait is ``watch_fallback_interval``, so the client polls at that cadence until the watch comes
  back; a 403 ``bundle_change_watch_forbidden`` switches to polling for good.

Errors: lifecycle preconditions (not attached yet, destructive transition) mark the loop
``blocked`` and retry after ``backoff_min`` without any HTTP request. A 401 is never retried in a
tight loop: the loop waits ``backoff_max`` and shows ``auth_failed`` until a request succeeds
again (the token provider may refresh meanwhile). Every other failure is logged, stored in the
status and passed to ``on_error(loop, error)``; operations that changed something are passed to
``on_sync(loop, report)`` (``"upload"`` with a committed :class:`PushReport`, ``"download"``
with an applied :class:`RemoteSyncReport`). Callbacks may be coroutine functions; their own
exceptions are logged and swallowed. A closed client ends the loops.

Deliberate differences from Go: sleeps are cancellable and :meth:`BackgroundSync.stop` really
stops (Go only stops with its context and keeps looping after ``Close``); the watch decision is
re-evaluated until the session is connected (Go polls forever when started before Attach,
§12.45); contention during a watch pull retries shortly instead of tearing the stream down;
events at or below the local checkpoint (our own pushes) do not trigger a pull; a successfully
opened stream resets the reconnect backoff; the SSE stream has no read timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from oversync_sa.client.config import BundleChangeWatchMode
from oversync_sa.client.errors import (
    ClientClosedError,
    DirtyStateRejectedError,
    LifecyclePreconditionError,
    PendingPushReplayError,
    ProtocolViolationError,
    SyncOperationInProgressError,
)
from oversync_sa.client.local_schema import fetch_all
from oversync_sa.client.results import (
    PushOutcome,
    PushReport,
    RemoteSyncOutcome,
    RemoteSyncReport,
)
from oversync_sa.client.transport import http_status_of
from oversync_sa.errors import BundleChangeWatchForbiddenError
from oversync_sa.wire import BundleChangeEvent

if TYPE_CHECKING:
    from oversync_sa.client.client import SyncClient

__all__ = [
    "BackgroundStatus",
    "BackgroundSync",
    "DownloadMode",
    "ErrorCallback",
    "LoopPhase",
    "LoopStatus",
    "SyncCallback",
]

_log = logging.getLogger("oversync_sa.client.background")

#: ``on_error(loop, error)`` with loop ``"upload"`` or ``"download"``.
ErrorCallback = Callable[[str, BaseException], Awaitable[None] | None]
#: ``on_sync(loop, report)`` after an operation that changed local or remote state.
SyncCallback = Callable[[str, PushReport | RemoteSyncReport], Awaitable[None] | None]

UPLOAD: Final = "upload"
DOWNLOAD: Final = "download"
#: How often the watch decision re-checks a lock held by another operation (Go: 10 ms).
_LOCK_POLL: Final = 0.01
_UNAVAILABLE: Final = frozenset({404, 405, 501, 503})
_CONTENTION: Final = (SyncOperationInProgressError, DirtyStateRejectedError, PendingPushReplayError)


class LoopPhase(StrEnum):
    """What a loop is doing right now."""

    STARTING = "starting"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    BACKING_OFF = "backing_off"
    BLOCKED = "blocked"
    AUTH_FAILED = "auth_failed"
    STOPPED = "stopped"


class DownloadMode(StrEnum):
    """How the download loop learns about new bundles."""

    DECIDING = "deciding"
    POLLING = "polling"
    WATCH = "watch"


@dataclass(frozen=True, slots=True)
class LoopStatus:
    """A snapshot of one loop; ``consecutive_failures`` resets on success."""

    phase: LoopPhase
    successes: int
    consecutive_failures: int
    last_error: BaseException | None
    last_success_at: datetime | None
    backoff: float


@dataclass(frozen=True, slots=True)
class BackgroundStatus:
    """A snapshot of background sync (``client.background_status``)."""

    running: bool
    upload: LoopStatus
    download: LoopStatus
    download_mode: DownloadMode
    watch_connected: bool

    @property
    def auth_failed(self) -> bool:
        """A loop is waiting after a 401: check the token provider."""
        return LoopPhase.AUTH_FAILED in (self.upload.phase, self.download.phase)


@dataclass(slots=True)
class _LoopState:
    phase: LoopPhase = LoopPhase.STARTING
    successes: int = 0
    failures: int = 0
    last_error: BaseException | None = None
    last_success_at: datetime | None = None
    backoff: float = 0.0

    def snapshot(self) -> LoopStatus:
        return LoopStatus(
            self.phase, self.successes, self.failures, self.last_error,
            self.last_success_at, self.backoff,
        )


class _WatchPullError(Exception):
    """A pull triggered by the watch failed; no extra fallback pull before reconnecting."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _StreamClosed(Exception):
    """The server ended the watch stream (a normal disconnect, not reported as an error)."""


@dataclass(frozen=True, slots=True)
class _End:
    error: Exception | None = None


def _is_auth_failure(exc: BaseException) -> bool:
    current: BaseException | None = exc
    while current is not None:
        if http_status_of(current) == 401:
            return True
        current = current.__cause__
    return False


@dataclass(slots=True)
class _Step:
    """The next wait of a loop and its backoff afterwards; ``None`` delay = stop the loop."""

    delay: float | None
    backoff: float


@dataclass(slots=True)
class BackgroundSync:
    """The two loops of one client; see the module docstring for their behaviour."""

    client: SyncClient
    on_error: ErrorCallback | None = None
    on_sync: SyncCallback | None = None
    _upload: _LoopState = field(default_factory=_LoopState)
    _download: _LoopState = field(default_factory=_LoopState)
    _mode: DownloadMode = DownloadMode.DECIDING
    _watch_connected: bool = False
    _stream_opened: bool = False
    #: A watch-driven pull lost to contention; the next stream pulls soon instead of waiting.
    _pull_owed: bool = False
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    # -- control ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    def start(self) -> None:
        """Launch both loops on the running event loop (idempotence is the caller's job)."""
        minimum = self.client.runtime.config.backoff_min
        self._upload.backoff = self._download.backoff = minimum
        self._tasks = [
            asyncio.create_task(self._guard(UPLOAD, self._upload_loop()), name="oversync-upload"),
            asyncio.create_task(
                self._guard(DOWNLOAD, self._download_loop()), name="oversync-download"
            ),
        ]

    async def stop(self, grace: float | None = 30.0) -> None:
        """Stop both loops: waits stop at once, an operation in flight may finish.

        After ``grace`` seconds (``None`` = no limit) still-running operations are cancelled;
        every operation is crash-safe (§5.6), so a cancelled push resumes on the next run.
        """
        self._stopping.set()
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current and not t.done()]
        if not pending:
            return
        _done, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)

    def status(self) -> BackgroundStatus:
        return BackgroundStatus(
            running=self.running,
            upload=self._upload.snapshot(),
            download=self._download.snapshot(),
            download_mode=self._mode,
            watch_connected=self._watch_connected,
        )

    # -- plumbing --------------------------------------------------------------------------

    async def _guard(self, name: str, loop: Awaitable[None]) -> None:
        state = self._upload if name == UPLOAD else self._download
        try:
            await loop
        except Exception:
            # A bug in the loop itself; without this the task would die silently.
            _log.exception("%s loop crashed", name)
            raise
        finally:
            state.phase = LoopPhase.STOPPED
            if name == DOWNLOAD:
                self._watch_connected = False

    async def _wait(self, delay: float) -> bool:
        """Sleep ``delay`` unless stopping; True when the loop must end."""
        if self._stopping.is_set():
            return True
        if delay <= 0:
            await asyncio.sleep(0)
            return self._stopping.is_set()
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return False
        return True

    async def _call(self, callback: Callable[..., object] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            outcome = callback(*args)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            _log.exception("background sync callback %r failed", callback)

    async def _succeeded(
        self, name: str, state: _LoopState, report: PushReport | RemoteSyncReport
    ) -> None:
        state.successes += 1
        state.failures = 0
        state.last_error = None
        state.last_success_at = datetime.now(UTC)
        state.backoff = self.client.runtime.config.backoff_min
        changed = report.outcome in (
            PushOutcome.COMMITTED,
            RemoteSyncOutcome.APPLIED_INCREMENTAL,
            RemoteSyncOutcome.APPLIED_SNAPSHOT,
        )
        if changed:
            await self._call(self.on_sync, name, report)

    async def _failed(
        self, name: str, state: _LoopState, exc: Exception, backoff: float
    ) -> _Step:
        """Classify ``exc``, update the status, notify, and choose the next wait."""
        config = self.client.runtime.config
        minimum, maximum = config.backoff_min, config.backoff_max
        if isinstance(exc, ClientClosedError):
            _log.info("%s loop stopped: client closed", name)
            return _Step(None, backoff)
        if isinstance(exc, _CONTENTION):
            _log.debug("%s loop: %s; retrying", name, exc)
            return _Step(minimum, backoff)
        state.last_error = exc
        if isinstance(exc, LifecyclePreconditionError):
            if state.phase is not LoopPhase.BLOCKED:
                _log.warning("%s loop blocked by lifecycle state: %s", name, exc)
            state.phase = LoopPhase.BLOCKED
            state.backoff = minimum
            return _Step(minimum, minimum)
        state.failures += 1
        if _is_auth_failure(exc):
            if state.phase is not LoopPhase.AUTH_FAILED:
                _log.error("%s loop: authentication failed (%s); retrying every %.3gs",
                           name, exc, maximum)
            state.phase = LoopPhase.AUTH_FAILED
            state.backoff = maximum
            await self._call(self.on_error, name, exc)
            return _Step(maximum, maximum)
        _log.warning("%s loop failed (retry in %.3gs): %s", name, backoff, exc)
        state.phase = LoopPhase.BACKING_OFF
        nxt = min(max(2 * backoff, minimum), maximum)
        state.backoff = nxt
        await self._call(self.on_error, name, exc)
        return _Step(backoff, nxt)

    # -- upload ----------------------------------------------------------------------------

    async def _upload_loop(self) -> None:
        runtime = self.client.runtime
        minimum = runtime.config.backoff_min
        state, backoff = self._upload, minimum
        while not self._stopping.is_set():
            if runtime.uploads_paused:
                state.phase = LoopPhase.PAUSED
                delay: float | None = minimum
            else:
                state.phase = LoopPhase.RUNNING
                try:
                    report = await self.client.push_pending()
                except Exception as exc:
                    step = await self._failed(UPLOAD, state, exc, backoff)
                    delay, backoff = step.delay, step.backoff
                else:
                    await self._succeeded(UPLOAD, state, report)
                    state.phase = LoopPhase.WAITING
                    delay, backoff = minimum, minimum
            if delay is None or await self._wait(delay):
                return

    # -- download: decision and polling ----------------------------------------------------

    async def _download_loop(self) -> None:
        mode = await self._choose_mode()
        if mode is None:
            return
        self._mode = mode
        if mode is DownloadMode.WATCH and await self._watch_loop():
            return
        self._mode = DownloadMode.POLLING
        await self._poll_loop()

    async def _choose_mode(self) -> DownloadMode | None:
        """§9.4's decision, re-evaluated until the session is connected; ``None`` = stop."""
        runtime = self.client.runtime
        if runtime.config.bundle_change_watch_mode is not BundleChangeWatchMode.AUTO:
            return DownloadMode.POLLING
        state = self._download
        while not self._stopping.is_set():
            try:
                await self.client.last_bundle_seq_seen()
                caps = await runtime.transport.capabilities("watch_capabilities")
            except SyncOperationInProgressError:
                delay: float | None = _LOCK_POLL
            except Exception as exc:
                if not isinstance(exc, LifecyclePreconditionError | ClientClosedError) and (
                    not _is_auth_failure(exc)
                ):
                    _log.info("bundle change watch unavailable (%s); polling", exc)
                    return DownloadMode.POLLING
                delay = (await self._failed(DOWNLOAD, state, exc, state.backoff)).delay
            else:
                if caps.features.bundle_change_watch:
                    return DownloadMode.WATCH
                _log.info("server does not advertise bundle_change_watch; polling")
                return DownloadMode.POLLING
            if delay is None or await self._wait(delay):
                return None
        return None

    async def _poll_loop(self) -> None:
        runtime = self.client.runtime
        minimum = runtime.config.backoff_min
        state, backoff = self._download, minimum
        while not self._stopping.is_set():
            if runtime.downloads_paused:
                # Go spins here without sleeping (§12.33).
                state.phase = LoopPhase.PAUSED
                delay: float | None = minimum
            else:
                state.phase = LoopPhase.RUNNING
                try:
                    before = await self.client.last_bundle_seq_seen()
                    report = await self.client.pull_to_stable()
                except Exception as exc:
                    step = await self._failed(DOWNLOAD, state, exc, backoff)
                    delay, backoff = step.delay, step.backoff
                else:
                    await self._succeeded(DOWNLOAD, state, report)
                    state.phase = LoopPhase.WAITING
                    moved = report.status is not None and (
                        report.status.last_bundle_seq_seen != before
                    )
                    # Keep pulling while the checkpoint moves: more may have been committed.
                    delay, backoff = (0.0 if moved else minimum), minimum
            if delay is None or await self._wait(delay):
                return

    # -- download: watch -------------------------------------------------------------------

    async def _watch_loop(self) -> bool:
        """Run the watch-aware downloader; True when stopping, False to switch to polling."""
        runtime = self.client.runtime
        config = runtime.config
        minimum, fallback = config.backoff_min, config.watch_fallback_interval
        state, backoff = self._download, minimum
        while not self._stopping.is_set():
            if runtime.downloads_paused:
                state.phase = LoopPhase.PAUSED
                if await self._wait(minimum):
                    return True
                continue
            try:
                after = await self.client.last_bundle_seq_seen()
            except Exception as exc:
                step = await self._failed(DOWNLOAD, state, exc, backoff)
                backoff = step.backoff
                if step.delay is None or await self._wait(step.delay):
                    return True
                continue
            self._stream_opened = False
            try:
                await self._stream(after, fallback)
                return True
            except BundleChangeWatchForbiddenError as exc:
                _log.warning("bundle change watch disabled for client: %s", exc)
                return False
            except Exception as exc:
                if self._stopping.is_set():
                    return True
                if self._stream_opened:
                    backoff = minimum
                step = await self._after_stream(exc, backoff)
                backoff = step.backoff
                if step.delay is None or await self._wait(step.delay):
                    return True
        return True

    async def _after_stream(self, exc: Exception, backoff: float) -> _Step:
        """Handle a stream that ended: report, one fallback pull, choose the wait."""
        state = self._download
        config = self.client.runtime.config
        cause = exc.error if isinstance(exc, _WatchPullError) else exc
        _log.warning("bundle change watch stream stopped: %s", str(cause) or "closed by server")
        closed = isinstance(exc, _StreamClosed)
        if closed:
            step = _Step(backoff, min(max(2 * backoff, config.backoff_min), config.backoff_max))
        else:
            step = await self._failed(DOWNLOAD, state, cause, backoff)
        if step.delay is None:
            return step
        if not isinstance(exc, _WatchPullError) and not self.client.runtime.downloads_paused:
            pulled = await self._pull()
            if isinstance(pulled, Exception):
                # As in Go, the fallback pull's error (if any) drives the backoff.
                step = await self._failed(DOWNLOAD, state, pulled, backoff)
                if step.delay is None:
                    return step
        if http_status_of(cause) in _UNAVAILABLE:
            # The server cannot watch right now: poll at the fallback cadence meanwhile.
            return _Step(config.watch_fallback_interval, step.backoff)
        return step

    async def _pull(self) -> RemoteSyncReport | Exception:
        """One ``pull_to_stable``; success is recorded, an error returned for the caller."""
        state = self._download
        state.phase = LoopPhase.RUNNING
        try:
            report = await self.client.pull_to_stable()
        except Exception as exc:
            self._pull_owed = isinstance(exc, _CONTENTION)
            return exc
        self._pull_owed = False
        await self._succeeded(DOWNLOAD, state, report)
        state.phase = LoopPhase.WAITING
        return report

    async def _checkpoint(self) -> int:
        # A lock-free read (WAL gives a consistent snapshot): only used to skip redundant pulls.
        async with self.client.runtime.engine.connect() as conn:
            rows = await fetch_all(
                conn,
                "SELECT last_bundle_seq_seen FROM _sync_attachment_state"
                " WHERE singleton_key = 1",
            )
        return int(rows[0][0]) if rows else 0

    async def _stream(self, after: int, fallback: float) -> None:
        """Consume one watch stream; returns only when stopping, raises when it ends."""
        runtime = self.client.runtime
        minimum = runtime.config.backoff_min
        loop = asyncio.get_running_loop()
        async with runtime.transport.watch(after) as events:
            self._stream_opened = self._watch_connected = True
            self._download.phase = LoopPhase.WAITING
            _log.info("bundle change watch connected after bundle %d", after)
            queue: asyncio.Queue[BundleChangeEvent | _End] = asyncio.Queue(maxsize=1)
            reader = asyncio.create_task(_read_events(events, queue))
            stop = asyncio.create_task(self._stopping.wait())
            try:
                due = loop.time() + (minimum if self._pull_owed else fallback)
                while True:
                    getter = asyncio.create_task(queue.get())
                    await asyncio.wait(
                        {getter, stop}, timeout=max(0.0, due - loop.time()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    getter.cancel()
                    item = None if getter.cancelled() or not getter.done() else getter.result()
                    if stop.done():
                        return
                    if isinstance(item, _End):
                        raise item.error if item.error is not None else _StreamClosed()
                    if isinstance(item, BundleChangeEvent):
                        if item.bundle_seq <= 0:
                            raise ProtocolViolationError(
                                "bundle_change_watch", "bundle watch event missing bundle_seq"
                            )
                        if item.bundle_seq <= await self._checkpoint():
                            continue
                    elif loop.time() < due:
                        continue
                    pulled = await self._pull()
                    due = loop.time() + fallback
                    if isinstance(pulled, _CONTENTION):
                        # Someone else holds the lock or local edits await upload: retry soon
                        # on this stream instead of tearing it down (Go reconnects).
                        due = loop.time() + minimum
                    elif isinstance(pulled, Exception):
                        raise _WatchPullError(pulled) from pulled
            finally:
                self._watch_connected = False
                for task in (reader, stop):
                    task.cancel()
                await asyncio.gather(reader, stop, return_exceptions=True)


async def _read_events(
    events: AsyncIterator[BundleChangeEvent], queue: asyncio.Queue[BundleChangeEvent | _End]
) -> None:
    """Pump the SSE events into ``queue`` (one slot: at most one wake-up waits)."""
    try:
        async for event in events:
            await queue.put(event)
    except Exception as exc:
        await queue.put(_End(exc))
    else:
        await queue.put(_End())
