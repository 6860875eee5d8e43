"""Network fault injection for sync clients: an ``httpx`` transport that misbehaves on purpose.

The sync protocol is built to survive an unreliable network: a push whose commit reply is lost
is re-created and answered ``already_committed`` (CLIENT.md §5.6), a failed chunk is re-sent,
pulls are idempotent. :class:`FaultTransport` lets a test (ours, or an application's) provoke
exactly those situations against a real server, deterministically:

* :func:`drop_request` - fail the request *before* it is sent (the server never sees it);
* :func:`drop_response` - send it, let the server process it completely, then lose the reply
  (the "lost reply" case: the client cannot know whether its write happened);
* :func:`duplicate` - send the same request twice (a retrying proxy); the client gets the first
  reply by default, the second with ``reply="last"``;
* :func:`delay` - sleep before sending;
* :func:`hold` - park the request until other requests have gone through (or a timeout, or
  :meth:`FaultInjector.release_all`), so requests from several clients are reordered;
* :func:`fail_status` - answer with a synthetic status (e.g. 503) without sending.

Rules match on HTTP method, URL path (a glob like ``/sync/push-sessions/*/commit`` or a
compiled regular expression, full match) and optionally the transport's ``label``; they fire on
chosen occurrences (``nth``, 1-based, counted per rule among the requests it matches), with a
seeded probability (``rate``), or on every match, at most ``limit`` times. Everything the
injector did is appended to :attr:`FaultInjector.log`, and every request it saw to
:attr:`FaultInjector.requests`, so a test can assert the fault really happened.

Example - lose the reply to the first push commit; the client recovers on its own::

    from oversync_sa.client import SyncClient
    from oversync_sa.testing.faults import FaultTransport, drop_response

    faults = FaultTransport([drop_response("POST", "/sync/push-sessions/*/commit", nth=1)])
    client = await SyncClient.create(path, base_url, token, models=Base,
                                     http_transport=faults)
    ...  # open, attach, write a row
    await client.push_pending()  # commit reply lost -> retried -> already_committed
    assert [e.action for e in faults.log] == [FaultAction.DROP_RESPONSE]

Several clients share one :class:`FaultInjector` (one rule set, one seeded random stream, one
log) through :meth:`FaultInjector.transport`, which gives each client its own transport - an
``httpx.AsyncClient`` closes its transport when it is closed, so transports are never shared.
"""

from __future__ import annotations

import asyncio
import enum
import fnmatch
import random
import re
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Literal

import httpx

__all__ = [
    "FaultAction",
    "FaultEvent",
    "FaultInjector",
    "FaultRule",
    "FaultTransport",
    "RequestRecord",
    "delay",
    "drop_request",
    "drop_response",
    "duplicate",
    "fail_status",
    "hold",
]


class FaultAction(enum.Enum):
    DROP_REQUEST = "drop_request"
    DROP_RESPONSE = "drop_response"
    DUPLICATE = "duplicate"
    DELAY = "delay"
    HOLD = "hold"
    FAIL_STATUS = "fail_status"


#: The order in which the actions of one request are carried out; at most one of each kind is
#: applied per request (the first rule in rule order wins), so a combination stays predictable.
_STAGE_ORDER = (
    FaultAction.DELAY,
    FaultAction.HOLD,
    FaultAction.DROP_REQUEST,
    FaultAction.FAIL_STATUS,
    FaultAction.DUPLICATE,
    FaultAction.DROP_RESPONSE,
)


@dataclass
class FaultRule:
    """When to apply one :class:`FaultAction`; build it with the module's helper functions.

    ``method`` and ``path`` of ``None`` match anything. ``nth`` selects occurrences among the
    requests this rule matches (1 = the first); ``rate`` fires with that probability, drawn from
    the injector's seeded generator; with neither the rule fires on every match. ``limit`` caps
    how often it fires in total (``None``: no cap). ``label`` restricts it to one transport.
    """

    action: FaultAction
    method: str | None = None
    path: str | re.Pattern[str] | None = None
    nth: int | Collection[int] | None = None
    rate: float | None = None
    limit: int | None = None
    label: str | None = None
    seconds: float = 0.0
    release_after: int = 1
    status: int = 503
    reply: Literal["first", "last"] = "first"
    matched: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.rate is not None and not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {self.rate}")
        if self.nth is not None and self.rate is not None:
            raise ValueError("give nth or rate, not both")
        if self.method is not None:
            self.method = self.method.upper()

    def matches(self, request: httpx.Request, label: str) -> bool:
        if self.label is not None and self.label != label:
            return False
        if self.method is not None and request.method != self.method:
            return False
        if self.path is None:
            return True
        path = request.url.path
        if isinstance(self.path, re.Pattern):
            return self.path.fullmatch(path) is not None
        return fnmatch.fnmatchcase(path, self.path)

    def decide(self, rng: random.Random) -> bool:
        """Count one matching request and say whether the rule fires on it."""
        self.matched += 1
        if self.limit is not None and self.fired >= self.limit:
            return False
        if self.nth is not None:
            wanted = {self.nth} if isinstance(self.nth, int) else set(self.nth)
            fire = self.matched in wanted
        elif self.rate is not None:
            # Draw on every match, fired or not, so a seed replays the same decisions.
            fire = rng.random() < self.rate
        else:
            fire = True
        if fire:
            self.fired += 1
        return fire


def drop_request(
    method: str | None = None, path: str | re.Pattern[str] | None = None, *,
    nth: int | Collection[int] | None = None, rate: float | None = None,
    limit: int | None = None, label: str | None = None,
) -> FaultRule:
    """Fail matching requests with ``httpx.ConnectError`` without sending them."""
    return FaultRule(FaultAction.DROP_REQUEST, method, path, nth=nth, rate=rate, limit=limit,
                 label=label)


def drop_response(
    method: str | None = None, path: str | re.Pattern[str] | None = None, *,
    nth: int | Collection[int] | None = None, rate: float | None = None,
    limit: int | None = None, label: str | None = None,
) -> FaultRule:
    """Send matching requests, read the whole reply, then raise ``httpx.ReadError``.

    The server has processed the request; only the client does not know. Not for streaming
    endpoints (``/sync/watch``): the reply is read to its end first.
    """
    return FaultRule(FaultAction.DROP_RESPONSE, method, path, nth=nth, rate=rate, limit=limit,
                 label=label)


def duplicate(
    method: str | None = None, path: str | re.Pattern[str] | None = None, *,
    nth: int | Collection[int] | None = None, rate: float | None = None,
    limit: int | None = None, label: str | None = None,
    reply: Literal["first", "last"] = "first",
) -> FaultRule:
    """Send matching requests twice, one after the other; return the ``reply`` one's answer."""
    return FaultRule(FaultAction.DUPLICATE, method, path, nth=nth, rate=rate, limit=limit,
                 label=label, reply=reply)


def delay(
    seconds: float, method: str | None = None, path: str | re.Pattern[str] | None = None, *,
    nth: int | Collection[int] | None = None, rate: float | None = None,
    limit: int | None = None, label: str | None = None,
) -> FaultRule:
    """Sleep ``seconds`` before sending matching requests."""
    return FaultRule(FaultAction.DELAY, method, path, nth=nth, rate=rate, limit=limit, label=label,
                 seconds=seconds)


def hold(
    method: str | None = None, path: str | re.Pattern[str] | None = None, *,
    release_after: int = 1, timeout: float = 5.0,
    nth: int | Collection[int] | None = None, rate: float | None = None,
    limit: int | None = None, label: str | None = None,
) -> FaultRule:
    """Park matching requests until ``release_after`` later requests of the same injector have
    been answered, ``timeout`` seconds pass, or :meth:`FaultInjector.release_all` is called.

    The later requests overtake the held one: this is how a test reorders requests of
    several clients. (One client sends one request at a time, so a hold on it can only end by
    the timeout - which still makes the timeout a bounded delay, never a deadlock.)
    """
    return FaultRule(FaultAction.HOLD, method, path, nth=nth, rate=rate, limit=limit, label=label,
                 seconds=timeout, release_after=release_after)


def fail_status(
    status: int = 503, method: str | None = None, path: str | re.Pattern[str] | None = None, *,
    nth: int | Collection[int] | None = None, rate: float | None = None,
    limit: int | None = None, label: str | None = None,
) -> FaultRule:
    """Answer matching requests with ``status`` (empty body) without sending them."""
    return FaultRule(FaultAction.FAIL_STATUS, method, path, nth=nth, rate=rate, limit=limit,
                 label=label, status=status)


@dataclass(frozen=True)
class FaultEvent:
    """One fault applied: to the ``request_index``-th request the injector saw (0-based)."""

    request_index: int
    label: str
    method: str
    path: str
    action: FaultAction
    #: Action-specific facts: the duplicate's two statuses, the hold's release reason...
    detail: str = ""


@dataclass
class RequestRecord:
    """One request seen by the injector and how it ended for the client."""

    index: int
    label: str
    method: str
    path: str
    #: The status the client received, or ``None`` if it got an exception instead.
    status: int | None = None
    #: The injected or real transport error the client got, by class name.
    error: str | None = None
    #: Whether the server got the request at least once.
    sent: bool = False


@dataclass
class _Held:
    waiting_for: int
    event: asyncio.Event


class FaultInjector:
    """The rules, the seeded random stream and the logs shared by one or more transports."""

    def __init__(self, rules: Iterable[FaultRule] = (), *, seed: int | None = 0) -> None:
        self.rules: list[FaultRule] = list(rules)
        self.rng = random.Random(seed)
        self.log: list[FaultEvent] = []
        self.requests: list[RequestRecord] = []
        self._held: list[_Held] = []
        self.enabled = True

    def add(self, *rules: FaultRule) -> None:
        self.rules.extend(rules)

    def clear(self) -> None:
        """Remove every rule (the logs stay) and release whatever is held."""
        self.rules.clear()
        self.release_all()

    def release_all(self) -> None:
        for held in self._held:
            held.event.set()
        self._held.clear()

    def transport(
        self, inner: httpx.AsyncBaseTransport | None = None, *, label: str = ""
    ) -> FaultTransport:
        """A new transport applying this injector's rules, tagged ``label`` in the logs."""
        return FaultTransport(injector=self, inner=inner, label=label)

    def events(self, action: FaultAction | None = None) -> list[FaultEvent]:
        return [e for e in self.log if action is None or e.action is action]

    def count(self, method: str, path: str | re.Pattern[str], *, sent_only: bool = False) -> int:
        """How many requests matched ``method`` and ``path`` (glob or regex, as in rules)."""
        probe = FaultRule(FaultAction.DELAY, method, path)
        return sum(
            1 for r in self.requests
            if probe.matches(httpx.Request(r.method, f"http://x{r.path}"), r.label)
            and (r.sent or not sent_only)
        )

    # -- machinery -------------------------------------------------------------------------

    def _plan(self, request: httpx.Request, label: str) -> dict[FaultAction, FaultRule]:
        plan: dict[FaultAction, FaultRule] = {}
        if not self.enabled:
            return plan
        for rule in self.rules:
            if rule.matches(request, label) and rule.decide(self.rng):
                plan.setdefault(rule.action, rule)
        return plan

    def _note(self, record: RequestRecord, action: FaultAction, detail: str = "") -> None:
        self.log.append(
            FaultEvent(record.index, record.label, record.method, record.path, action, detail)
        )

    def _answered(self) -> None:
        """A request finished: count it towards every hold waiting for later traffic."""
        still: list[_Held] = []
        for held in self._held:
            held.waiting_for -= 1
            if held.waiting_for <= 0:
                held.event.set()
            else:
                still.append(held)
        self._held = still

    async def _hold(self, rule: FaultRule, record: RequestRecord) -> None:
        held = _Held(rule.release_after, asyncio.Event())
        self._held.append(held)
        started = time.monotonic()
        try:
            await asyncio.wait_for(held.event.wait(), timeout=rule.seconds)
            reason = "released"
        except TimeoutError:
            reason = "timeout"
            if held in self._held:
                self._held.remove(held)
        self._note(record, FaultAction.HOLD,
                   f"{reason} after {time.monotonic() - started:.3f}s")


class FaultTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` that applies fault rules around a real transport.

    ``FaultTransport(rules, seed=...)`` owns a private :class:`FaultInjector` (available as
    :attr:`injector`, its log also as :attr:`log`); ``inner`` defaults to a fresh
    ``httpx.AsyncHTTPTransport`` and is closed with this transport.
    """

    def __init__(
        self,
        rules: Iterable[FaultRule] = (),
        *,
        seed: int | None = 0,
        inner: httpx.AsyncBaseTransport | None = None,
        injector: FaultInjector | None = None,
        label: str = "",
    ) -> None:
        # A private injector dies with this transport; a shared one outlives it (other clients
        # may still be parked in its holds).
        self._owns_injector = injector is None
        self.injector = injector if injector is not None else FaultInjector(rules, seed=seed)
        if injector is not None:
            injector.add(*rules)
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self.label = label

    @property
    def log(self) -> list[FaultEvent]:
        return self.injector.log

    @property
    def requests(self) -> list[RequestRecord]:
        return self.injector.requests

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        injector = self.injector
        record = RequestRecord(len(injector.requests), self.label, request.method,
                               request.url.path)
        injector.requests.append(record)
        try:
            response = await self._handle(request, record)
        except BaseException as exc:
            record.error = type(exc).__name__
            raise
        else:
            record.status = response.status_code
            return response
        finally:
            injector._answered()

    async def _handle(self, request: httpx.Request, record: RequestRecord) -> httpx.Response:
        injector = self.injector
        plan = injector._plan(request, self.label)
        for action in _STAGE_ORDER:
            rule = plan.get(action)
            if rule is None:
                continue
            if action is FaultAction.DELAY:
                injector._note(record, action, f"{rule.seconds:.3f}s")
                await asyncio.sleep(rule.seconds)
            elif action is FaultAction.HOLD:
                await injector._hold(rule, record)
            elif action is FaultAction.DROP_REQUEST:
                injector._note(record, action)
                raise httpx.ConnectError("injected fault: request dropped before sending",
                                         request=request)
            elif action is FaultAction.FAIL_STATUS:
                injector._note(record, action, str(rule.status))
                return httpx.Response(rule.status, request=request)
        duplicated = plan.get(FaultAction.DUPLICATE)
        if duplicated is not None:
            response = await self._send_twice(request, record, duplicated)
        else:
            response = await self.inner.handle_async_request(request)
            record.sent = True
        if FaultAction.DROP_RESPONSE in plan:
            # Read the reply to the end so the server-side request really completed, then lose
            # it the way a connection reset after the response was written would.
            await response.aread()
            await response.aclose()
            injector._note(record, FaultAction.DROP_RESPONSE, str(response.status_code))
            raise httpx.ReadError("injected fault: response lost after the server processed it",
                                  request=request)
        return response

    async def _send_twice(
        self, request: httpx.Request, record: RequestRecord, rule: FaultRule
    ) -> httpx.Response:
        body = await request.aread()
        first = await self.inner.handle_async_request(request)
        await first.aread()
        record.sent = True
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=body,
                             extensions=request.extensions)
        second = await self.inner.handle_async_request(copy)
        await second.aread()
        self.injector._note(record, FaultAction.DUPLICATE,
                            f"{first.status_code},{second.status_code}")
        kept, dropped = (first, second) if rule.reply == "first" else (second, first)
        await dropped.aclose()
        return kept

    async def aclose(self) -> None:
        if self._owns_injector:
            self.injector.release_all()
        await self.inner.aclose()
