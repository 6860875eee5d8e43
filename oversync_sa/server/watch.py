"""Bundle-change watch (SERVER.md §7.4): process-local fan-out of "scope has a newer bundle".

Three parts, all on the service's event loop:

* :class:`BundleChangeHub` keeps this process's subscribers, keyed by ``user_pk``. Each
  subscriber has a one-slot buffer and a ``last_seq``: publishing never blocks, older or equal
  sequences are dropped, and a newer event replaces one that was not read yet, so a slow reader
  only ever sees the newest head.
* The listener (inside :class:`BundleChangeWatch`) holds one PostgreSQL connection that
  ``LISTEN`` s on the notify channel and publishes every valid notification. PostgreSQL delivers
  a ``NOTIFY`` to every listening session, so every server process on the database wakes its own
  subscribers, whichever process committed the bundle.
* :func:`subscribe` checks the caller's scope and registers a subscriber, emitting a catch-up
  event at once when the scope is already past the client's checkpoint.

Events are wake-up hints only: a client that receives one pulls. Losing a hint is therefore
never a correctness problem, only a latency one, and the listener is built around that: after
every (re)connect, and periodically while connected, it republishes the current head of every
scope that has subscribers, which also covers notifications sent while it was not listening.

Lifecycle: the host starts the listener after :meth:`SyncService.bootstrap` and closes it when
the service shuts down (:meth:`BundleChangeWatch.start` / :meth:`BundleChangeWatch.close` on
:func:`bundle_change_watch` of the service). Closing ends every open subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import msgspec
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from oversync_sa.errors import (
    AuthenticationFailedError,
    BundleChangeWatchDisabledError,
    BundleChangeWatchFailedError,
    InvalidRequestError,
    ServiceUnavailableError,
)
from oversync_sa.server import fastsql
from oversync_sa.server.lifecycle import SHUTTING_DOWN_MESSAGE
from oversync_sa.server.observer import notify
from oversync_sa.server.scope import read_scope, require_initialized
from oversync_sa.wire.models import BundleChangeEvent, BundleChangeNotification

if TYPE_CHECKING:
    from oversync_sa.server.service import SyncService

__all__ = [
    "LISTENER_APPLICATION_NAME",
    "BundleChangeHub",
    "BundleChangeSubscription",
    "BundleChangeWatch",
    "bundle_change_watch",
    "parse_notification",
    "subscribe",
]

_log = logging.getLogger("oversync_sa.server.watch")

#: ``application_name`` of the listener's session, so operators can find it in
#: ``pg_stat_activity``.
LISTENER_APPLICATION_NAME: Final = "oversync-bundle-change-listener"

_INITIAL_BACKOFF: Final = 0.1
_MAX_BACKOFF: Final = 2.0
_DEFAULT_RESYNC: Final = timedelta(seconds=30)

_HEADS_SQL: Final = (
    "SELECT user_pk, next_bundle_seq - 1 FROM sync.user_state WHERE user_pk = ANY($1::bigint[])"
)
_HEAD_SQL: Final = text("SELECT next_bundle_seq - 1 FROM sync.user_state WHERE user_pk = :pk")
_USER_PK_SQL: Final = text("SELECT user_pk FROM sync.user_state WHERE user_id = :user_id")

_NOTIFICATION_DECODER: Final = msgspec.json.Decoder(BundleChangeNotification)


# ---------------------------------------------------------------------------------------- hub


class BundleChangeSubscription:
    """One watcher's view of its scope: an async iterator of coalesced :class:`BundleChangeEvent`.

    Made by :meth:`BundleChangeHub.subscribe`. Exactly one task should consume it. Iteration
    ends when the subscription is closed, by :meth:`close` (or ``async with``) or by the hub
    shutting down; an event still buffered at that moment is dropped, since the client will
    catch up on its next subscribe anyway.
    """

    def __init__(self, hub: BundleChangeHub, user_pk: int, after_bundle_seq: int) -> None:
        self._hub = hub
        self.user_pk = user_pk
        self._last_seq = after_bundle_seq
        self._pending: BundleChangeEvent | None = None
        self._ready = asyncio.Event()
        self._closed = False

    @property
    def last_seq(self) -> int:
        """The newest ``bundle_seq`` accepted so far (starts at ``after_bundle_seq``)."""
        return self._last_seq

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unregister from the hub and end iteration; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending = None
        self._ready.set()
        self._hub._forget(self)

    def _offer(self, event: BundleChangeEvent) -> None:
        # Runs inside publish: must never block and never raise.
        if self._closed or event.bundle_seq <= self._last_seq:
            return
        self._pending = event
        self._last_seq = event.bundle_seq
        self._ready.set()

    async def receive(self) -> BundleChangeEvent | None:
        """Wait for the next event; ``None`` once the subscription is closed.

        Cancellation-safe (an event is only taken from the slot on return), so callers bound
        the wait with ``asyncio.timeout`` to interleave other work such as heartbeats.
        """
        if not self._closed and self._pending is None:
            await self._ready.wait()
        event, self._pending = self._pending, None
        if not self._closed:
            self._ready.clear()
        return event

    def __aiter__(self) -> AsyncIterator[BundleChangeEvent]:
        return self

    async def __anext__(self) -> BundleChangeEvent:
        event = await self.receive()
        if event is None:
            raise StopAsyncIteration
        return event

    async def __aenter__(self) -> BundleChangeSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class BundleChangeHub:
    """The process-local registry of subscribers, keyed by ``user_pk``.

    All methods are synchronous and must be called from the event loop that owns the
    subscriptions; that loop is the only synchronisation needed. ``on_change`` (if given) is
    called with the new total after every subscribe and unsubscribe; it must not raise.
    """

    def __init__(self, on_change: Callable[[int], None] | None = None) -> None:
        self._subscribers: dict[int, set[BundleChangeSubscription]] = {}
        self._closed = False
        self._total = 0
        self._on_change = on_change

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(self, user_pk: int, after_bundle_seq: int) -> BundleChangeSubscription:
        """Register a subscriber that only accepts ``bundle_seq > after_bundle_seq``.

        After :meth:`close` the returned subscription is already closed.
        """
        subscription = BundleChangeSubscription(self, user_pk, after_bundle_seq)
        if self._closed:
            subscription.close()
        else:
            self._subscribers.setdefault(user_pk, set()).add(subscription)
            self._changed(+1)
        return subscription

    def publish(self, user_pk: int, event: BundleChangeEvent) -> None:
        """Offer ``event`` to every subscriber of ``user_pk``; never blocks.

        Non-positive sequences are ignored.
        """
        if event.bundle_seq <= 0:
            return
        for subscription in tuple(self._subscribers.get(user_pk, ())):
            subscription._offer(event)

    def subscriber_count(self, user_pk: int) -> int:
        return len(self._subscribers.get(user_pk, ()))

    @property
    def total_subscribers(self) -> int:
        """Open subscriptions of every scope in this process."""
        return self._total

    def _changed(self, delta: int) -> None:
        self._total += delta
        if self._on_change is not None:
            self._on_change(self._total)

    def active_user_pks(self) -> list[int]:
        """The scopes that currently have at least one subscriber."""
        return list(self._subscribers)

    def close(self) -> None:
        """Close every subscription and refuse new ones."""
        self._closed = True
        for subscriptions in list(self._subscribers.values()):
            for subscription in tuple(subscriptions):
                subscription.close()
        self._subscribers.clear()

    def _forget(self, subscription: BundleChangeSubscription) -> None:
        subscriptions = self._subscribers.get(subscription.user_pk)
        if subscriptions is None:
            return
        if subscription not in subscriptions:
            return
        subscriptions.discard(subscription)
        if not subscriptions:
            del self._subscribers[subscription.user_pk]
        self._changed(-1)


def parse_notification(payload: str) -> BundleChangeNotification:
    """Decode and validate a NOTIFY payload (§7.4).

    Raises :class:`ValueError` for invalid JSON, wrong member types, or a non-positive
    ``user_pk``/``bundle_seq``. Unknown members are ignored, as Go's decoder does.
    """
    try:
        notification = _NOTIFICATION_DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise ValueError(f"decode bundle change notification: {exc}") from None
    if notification.user_pk <= 0 or notification.bundle_seq <= 0:
        raise ValueError("bundle change notification requires positive user_pk and bundle_seq")
    return notification


# ----------------------------------------------------------------------------- watch runtime


class _ConnectionLost(Exception):
    """The listener's connection was closed under it."""


class BundleChangeWatch:
    """Hub plus listener for one :class:`SyncService`; see :func:`bundle_change_watch`.

    ``resync_interval`` is how often a connected listener republishes the heads of watched
    scopes. It doubles as a liveness check of the listening connection (a silently dead
    connection fails the query and is replaced) and bounds the delay of a wake-up whose
    notification was lost.

    The listener uses one connection from the service's engine for as long as it listens, like
    Go's pool acquire; it is invalidated rather than returned, so its ``LISTEN`` registration
    never leaks into the pool.
    """

    def __init__(
        self, service: SyncService, *, resync_interval: timedelta = _DEFAULT_RESYNC
    ) -> None:
        if resync_interval <= timedelta(0):
            raise ValueError("resync_interval must be positive")
        self._service = service
        self._resync_seconds = resync_interval.total_seconds()
        observer = service.config.observer
        self.hub = BundleChangeHub(
            None if observer is None else partial(notify, observer.watch_subscribers_changed)
        )
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._closed = False
        self._warned_not_started = False
        self._session_reached_listening = False

    @property
    def enabled(self) -> bool:
        return self._service.config.bundle_change_watch.enabled

    @property
    def listening(self) -> bool:
        """Whether the listener is connected, ``LISTEN`` ing and has caught up."""
        return self._listening.is_set()

    async def wait_listening(self) -> None:
        """Return once the listener is connected (for readiness checks and tests)."""
        await self._listening.wait()

    async def start(self) -> None:
        """Start the background listener; idempotent while running.

        Raises :class:`BundleChangeWatchDisabledError` when the watch is disabled and
        :class:`ServiceUnavailableError` once :meth:`close` was called.
        """
        if not self.enabled:
            raise BundleChangeWatchDisabledError("Bundle change watch is disabled")
        if self._closed:
            raise ServiceUnavailableError(SHUTTING_DOWN_MESSAGE)
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name="oversync-bundle-change-listener"
            )

    async def close(self) -> None:
        """Stop the listener and end every subscription; idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listening.clear()
        self.hub.close()

    async def subscribe(self, user_id: str, after_bundle_seq: int) -> BundleChangeSubscription:
        """Subscribe ``user_id``'s scope to wake-ups past ``after_bundle_seq`` (§7.4).

        Check order: watch disabled (:class:`BundleChangeWatchDisabledError`), blank user
        (:class:`AuthenticationFailedError`), negative checkpoint (:class:`InvalidRequestError`),
        service shutting down (:class:`ServiceUnavailableError`), scope not ``INITIALIZED``
        (:class:`ScopeUninitializedError` / :class:`ScopeInitializingError`, read in a
        READ ONLY transaction). Database failures become
        :class:`BundleChangeWatchFailedError`.

        When the scope's head is already past ``after_bundle_seq`` the subscription starts with
        a catch-up event carrying only ``bundle_seq``. Setting up counts as an in-flight
        operation; the open subscription does not.
        """
        if not self.enabled:
            raise BundleChangeWatchDisabledError("Bundle change watch is disabled")
        if not user_id:
            raise AuthenticationFailedError("actor user_id is required")
        if after_bundle_seq < 0:
            raise InvalidRequestError("after_bundle_seq must be >= 0")
        async with self._service.operation():
            if self._closed:
                raise ServiceUnavailableError(SHUTTING_DOWN_MESSAGE)
            self._warn_if_not_started()
            try:
                return await self._register(user_id, after_bundle_seq)
            except SQLAlchemyError as exc:
                _log.error("failed to subscribe bundle change watch for %s", user_id, exc_info=True)
                raise BundleChangeWatchFailedError(
                    "Failed to subscribe bundle change watch"
                ) from exc

    async def subscriber_count(self, user_id: str) -> int:
        """This process's subscriber count for ``user_id`` (0 for an unknown user).

        Diagnostics only (the example's ``GET /test/watch-subscribers``): other processes have
        their own subscribers.
        """
        async with self._service.engine.connect() as conn:
            user_pk = await conn.scalar(_USER_PK_SQL, {"user_id": user_id.strip()})
        return 0 if user_pk is None else self.hub.subscriber_count(int(user_pk))

    async def _register(self, user_id: str, after_bundle_seq: int) -> BundleChangeSubscription:
        async with self._service.engine.connect() as conn:
            await conn.execution_options(postgresql_readonly=True)
            async with conn.begin():
                scope = require_initialized(await read_scope(conn, user_id), user_id)
            # Register before reading the head: a bundle committed in between is then either in
            # the head read below or delivered by the listener, never in neither.
            subscription = self.hub.subscribe(scope.user_pk, after_bundle_seq)
            try:
                head = await _read_head(conn, scope.user_pk)
            except BaseException:
                subscription.close()
                raise
        if head > after_bundle_seq:
            self.hub.publish(scope.user_pk, BundleChangeEvent(bundle_seq=head))
        return subscription

    def _warn_if_not_started(self) -> None:
        if self._task is None and not self._warned_not_started:
            self._warned_not_started = True
            _log.warning(
                "bundle change watch subscription without a running listener: only catch-up "
                "events will be delivered; call BundleChangeWatch.start() after bootstrap"
            )

    # ------------------------------------------------------------------------- listener loop

    async def _run(self) -> None:
        backoff = _INITIAL_BACKOFF
        while True:
            try:
                await self._listen_session()
            except Exception as exc:
                _log.warning("bundle change listener session failed: %s", exc)
            finally:
                self._listening.clear()
            # A session that got as far as listening starts the back-off afresh; Go keeps
            # the grown value forever, so one outage would slow every later reconnect.
            if self._session_reached_listening:
                backoff = _INITIAL_BACKOFF
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _listen_session(self) -> None:
        """One connection's lifetime; returns or raises when it must be replaced."""
        self._session_reached_listening = False
        channel = self._service.config.bundle_change_watch.notify_channel
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()

        def on_notification(_conn: Any, _pid: int, got_channel: str, payload: str) -> None:
            if got_channel == channel:
                self._publish_payload(payload)

        def on_termination(_conn: Any) -> None:
            if not lost.done():
                lost.set_result(None)

        async with self._service.engine.connect() as conn:
            try:
                raw = await _driver_connection(conn)
                raw.add_termination_listener(on_termination)
                await raw.execute(f"SET application_name = '{LISTENER_APPLICATION_NAME}'")
                # asyncpg issues LISTEN with the channel identifier-quoted.
                await raw.add_listener(channel, on_notification)
                await self._catch_up(raw)
                self._listening.set()
                self._session_reached_listening = True
                _log.info("bundle change listener listening on %r", channel)
                while True:
                    try:
                        async with asyncio.timeout(self._resync_seconds):
                            await asyncio.shield(lost)
                    except TimeoutError:
                        await self._catch_up(raw)
                    else:
                        raise _ConnectionLost("listener connection closed")
            finally:
                # Never hand a LISTENing connection back to the pool.
                await conn.invalidate()

    async def _catch_up(self, raw: Any) -> None:
        user_pks = self.hub.active_user_pks()
        if not user_pks:
            # Still touch the connection: this is also the liveness check.
            await raw.execute("SELECT 1")
            return
        for user_pk, head in await raw.fetch(_HEADS_SQL, user_pks):
            self.hub.publish(int(user_pk), BundleChangeEvent(bundle_seq=int(head)))

    def _publish_payload(self, payload: str) -> None:
        try:
            notification = parse_notification(payload)
        except ValueError as exc:
            _log.warning("ignored invalid bundle change notification %r: %s", payload, exc)
            return
        self.hub.publish(
            notification.user_pk,
            BundleChangeEvent(
                bundle_seq=notification.bundle_seq,
                source_id=notification.source_id,
                source_bundle_id=notification.source_bundle_id,
            ),
        )


async def _driver_connection(conn: AsyncConnection) -> Any:
    raw = await fastsql.driver(conn)
    if raw is None:
        raise RuntimeError("the engine's connection has no driver connection")
    return raw


async def _read_head(conn: AsyncConnection, user_pk: int) -> int:
    head = await conn.scalar(_HEAD_SQL, {"pk": user_pk})
    return int(head or 0)


# ----------------------------------------------------------------------------- service access

_WATCHES: weakref.WeakKeyDictionary[SyncService, BundleChangeWatch] = weakref.WeakKeyDictionary()


def bundle_change_watch(service: SyncService) -> BundleChangeWatch:
    """The watch runtime of ``service`` (one per service, created on first use).

    The host starts it after bootstrap and closes it on shutdown; :func:`subscribe` and the
    HTTP route use the same instance.
    """
    watch = _WATCHES.get(service)
    if watch is None:
        watch = _WATCHES[service] = BundleChangeWatch(service)
    return watch


async def subscribe(
    service: SyncService, actor_user_id: str, after_bundle_seq: int
) -> BundleChangeSubscription:
    """Subscribe to wake-ups of ``actor_user_id``'s scope.

    Shorthand for :meth:`BundleChangeWatch.subscribe` on the service's :func:`bundle_change_watch`.
    """
    return await bundle_change_watch(service).subscribe(actor_user_id, after_bundle_seq)
