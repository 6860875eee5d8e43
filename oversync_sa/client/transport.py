"""Typed HTTP client for the sync endpoints (CLIENT.md Appendix A) with the §9.2 retry policy.

:class:`SyncTransport` turns each endpoint into one coroutine that returns the decoded wire
struct. Failures are typed:

* a non-2xx answer with a ``{"error": code, "message": ...}`` body raises the matching
  :class:`~oversync_sa.errors.WireError` subclass (via :func:`~oversync_sa.errors.wire_error_for`);
  the real HTTP status and raw body are attached and readable with :func:`http_status_of` /
  :func:`http_body_of` (a server may send a code this library does not know);
* a non-2xx answer without such a body raises
  :class:`~oversync_sa.client.errors.UnexpectedStatusError`;
* an undecodable 2xx body raises :class:`~oversync_sa.client.errors.ProtocolViolationError`;
* connection failures surface as :class:`httpx.TransportError`.

Retries: the request-level operations of §9.2 (``connect_capabilities``, ``connect_request``,
``pull_request``, ``snapshot_session_create``, ``snapshot_chunk_fetch``) retry each attempt that
ends in 429/502/503/504 or a connection error; push requests are single attempts and the push
module wraps its whole operation in :func:`run_with_retry` (operation ``push_pending``).

:meth:`SyncTransport.watch` opens the ``/sync/watch`` SSE stream (§9.4): a single attempt, with
the client's connect/write/pool timeouts but *no read timeout* - heartbeats keep an idle stream
alive, and Go's whole-request timeout cutting every stream after 120 s is a defect (§12.45).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from oversync_sa.client.config import DEFAULT_RETRY_POLICY, RetryPolicy
from oversync_sa.client.errors import (
    ProtocolViolationError,
    RetryExhaustedError,
    UnexpectedStatusError,
)
from oversync_sa.client.sse import iter_sse_events
from oversync_sa.errors import OversyncError, WireError, wire_error_for
from oversync_sa.wire import (
    BundleChangeEvent,
    CapabilitiesResponse,
    CommittedBundleRowsResponse,
    ConnectRequest,
    ConnectResponse,
    PullResponse,
    PushSessionChunkRequest,
    PushSessionChunkResponse,
    PushSessionCommitResponse,
    PushSessionCreateRequest,
    PushSessionCreateResponse,
    SnapshotChunkResponse,
    SnapshotSession,
    SnapshotSessionCreateRequest,
    SnapshotSourceReplacement,
)

__all__ = [
    "DEFAULT_HTTP_TIMEOUT",
    "RETRYABLE_STATUSES",
    "SOURCE_ID_HEADER",
    "SyncTransport",
    "TokenProvider",
    "http_body_of",
    "http_status_of",
    "is_retryable",
    "run_with_retry",
]

_log = logging.getLogger("oversync_sa.client.transport")

#: The HTTP client timeout of the protocol (§1.2 step 8), seconds.
DEFAULT_HTTP_TIMEOUT: Final = 120.0
#: Statuses that mean "try again later" (§9.2); everything else is final.
RETRYABLE_STATUSES: Final = frozenset({429, 502, 503, 504})
SOURCE_ID_HEADER: Final = "Oversync-Source-ID"

#: Returns the bearer token; called once per request, sync or async.
TokenProvider = Callable[[], str | Awaitable[str]]
Sleep = Callable[[float], Awaitable[None]]

_T = TypeVar("_T")
_S = TypeVar("_S", bound=msgspec.Struct)

# Attribute names used to attach the HTTP facts to a WireError raised for a response.
_STATUS_ATTR: Final = "http_status"
_BODY_ATTR: Final = "http_body"


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status of the response that produced ``exc``, if it came from one."""
    if isinstance(exc, UnexpectedStatusError):
        return exc.status
    status = getattr(exc, _STATUS_ATTR, None)
    return status if isinstance(status, int) else None


def http_body_of(exc: BaseException) -> bytes | None:
    """The raw body of the error response that produced ``exc``, if it came from one."""
    if isinstance(exc, UnexpectedStatusError):
        return exc.body
    body = getattr(exc, _BODY_ATTR, None)
    return body if isinstance(body, bytes) else None


def is_retryable(exc: BaseException) -> bool:
    """Whether §9.2 allows another attempt after ``exc``.

    Retryable: responses with status 429/502/503/504 and connection-level failures (resets,
    broken pipes, unexpected EOF, timeouts). Never: cancellation, other statuses (401, 403,
    404, 409, 410, 500...), decode/validation errors and the client's typed state errors.
    """
    if isinstance(exc, asyncio.CancelledError):
        return False
    if isinstance(exc, httpx.TransportError):
        # Protocol-level breakage (unsupported protocol, invalid URL...) will not heal.
        return not isinstance(exc, httpx.UnsupportedProtocol)
    if isinstance(exc, ConnectionError | TimeoutError | EOFError):
        return True
    status = http_status_of(exc)
    return status is not None and status in RETRYABLE_STATUSES


def _delay(backoff: float, jitter_fraction: float, rng: random.Random) -> float:
    spread = backoff * jitter_fraction
    return max(0.0, backoff + rng.uniform(-spread, spread))


async def run_with_retry(
    operation: str,
    attempt: Callable[[], Awaitable[_T]],
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> _T:
    """Run ``attempt`` under ``policy`` (§9.2) and return its result.

    A non-retryable error is raised as is. When the last allowed attempt fails retryably the
    result is :class:`RetryExhaustedError` (``__cause__`` = last error), including for a
    disabled policy, whose single attempt is also its last. Between attempts the coroutine
    sleeps ``backoff ± backoff * jitter`` (cancellable) and doubles ``backoff`` up to the cap.
    """
    attempts = policy.effective_attempts
    backoff = policy.initial_backoff
    jitter_rng = rng if rng is not None else random.Random()
    for number in range(1, attempts + 1):
        try:
            return await attempt()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            if number == attempts:
                raise RetryExhaustedError(operation, number, exc) from exc
            wait = _delay(backoff, policy.jitter_fraction, jitter_rng)
            _log.info(
                "%s attempt %d/%d failed (%s); retrying in %.3fs",
                operation, number, attempts, exc, wait,
            )
            await sleep(wait)
            backoff = min(backoff * 2, policy.max_backoff)
    raise AssertionError("unreachable: effective_attempts is always >= 1")


def _error_for_response(operation: str, response: httpx.Response) -> OversyncError:
    """Map a non-2xx response to the typed error of the contract (see module docstring)."""
    body = response.content
    parsed: Any = None
    try:
        parsed = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        parsed = None
    code = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(code, str) or not code:
        return UnexpectedStatusError(operation, response.status_code, body)
    assert isinstance(parsed, dict)
    message = parsed.get("message")
    extras = {k: v for k, v in parsed.items() if k not in ("error", "message")}
    error: WireError = wire_error_for(code, message if isinstance(message, str) else "", **extras)
    setattr(error, _STATUS_ATTR, response.status_code)
    setattr(error, _BODY_ATTR, body)
    return error


class SyncTransport:
    """One authenticated HTTP client per sync client.

    ``base_url`` is the server root the ``/sync/...`` paths are appended to (a trailing ``/`` is
    ignored, so ``https://h/api`` and ``https://h/api/`` are the same). ``token_provider`` is
    called for every request. ``source_id`` returns the *current* in-memory source id so that a
    rotated source is used from the next request on; an empty id sends no header.

    Pass ``http`` to share or instrument an :class:`httpx.AsyncClient` (it is then not closed by
    :meth:`aclose`), or ``transport`` to plug an ``httpx`` transport (e.g.
    :class:`httpx.MockTransport`) into the client this class creates.
    """

    def __init__(
        self,
        base_url: str,
        token_provider: TokenProvider,
        *,
        source_id: Callable[[], str] = lambda: "",
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_HTTP_TIMEOUT,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if http is not None and transport is not None:
            raise ValueError("pass either http or transport, not both")
        self.base_url = base_url.rstrip("/")
        self.retry_policy = retry_policy
        self._token_provider = token_provider
        self._source_id = source_id
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(
            timeout=timeout, transport=transport
        )
        base = self._http.timeout
        self._stream_timeout = httpx.Timeout(
            connect=base.connect, read=None, write=base.write, pool=base.pool
        )
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()

    async def aclose(self) -> None:
        """Close the HTTP client if this transport created it."""
        if self._owns_http:
            await self._http.aclose()

    # -- plumbing --------------------------------------------------------------------------

    async def _headers(self, *, json_body: bool) -> dict[str, str]:
        token = self._token_provider()
        if inspect.isawaitable(token):
            token = await token
        headers = {"Authorization": f"Bearer {token}"}
        source_id = self._source_id()
        if source_id:
            headers[SOURCE_ID_HEADER] = source_id
        if json_body:
            headers["Content-Type"] = "application/json"
        return headers

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, int] | None = None,
        body: msgspec.Struct | None = None,
    ) -> httpx.Response:
        """One attempt; raises the typed error for any non-2xx status."""
        content = msgspec.json.encode(body) if body is not None else None
        response = await self._http.request(
            method,
            f"{self.base_url}{path}",
            params=dict(params) if params else None,
            content=content,
            headers=await self._headers(json_body=content is not None),
        )
        if not 200 <= response.status_code < 300:
            raise _error_for_response(operation, response)
        return response

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        result: type[_S],
        *,
        params: Mapping[str, int] | None = None,
        body: msgspec.Struct | None = None,
        retried: bool = False,
    ) -> _S:
        async def attempt() -> httpx.Response:
            return await self._send(operation, method, path, params=params, body=body)

        if retried:
            response = await run_with_retry(
                operation, attempt, self.retry_policy, sleep=self._sleep, rng=self._rng
            )
        else:
            response = await attempt()
        try:
            return msgspec.json.decode(response.content, type=result)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolViolationError(
                operation, f"failed to decode {result.__name__}: {exc}"
            ) from exc

    async def _best_effort_delete(self, operation: str, path: str) -> bool:
        """DELETE that never raises (the protocol ignores its outcome); True on 2xx."""
        try:
            await self._send(operation, "DELETE", path)
        except (OversyncError, httpx.HTTPError) as exc:
            _log.debug("%s failed (ignored): %s", operation, exc)
            return False
        return True

    # -- lifecycle -------------------------------------------------------------------------

    async def capabilities(
        self, operation: str = "connect_capabilities"
    ) -> CapabilitiesResponse:
        """``GET /sync/capabilities`` (request-level retry; ``operation`` names it in errors:
        ``connect_capabilities`` for Attach, ``watch_capabilities`` for the watch decision)."""
        return await self._call(
            operation, "GET", "/sync/capabilities", CapabilitiesResponse, retried=True,
        )

    async def connect(self, has_local_pending_rows: bool) -> ConnectResponse:
        """``POST /sync/connect`` (retried as ``connect_request``)."""
        return await self._call(
            "connect_request", "POST", "/sync/connect", ConnectResponse,
            body=ConnectRequest(has_local_pending_rows=has_local_pending_rows),
            retried=True,
        )

    # -- push (single attempts; the push operation as a whole is retried) -----------------

    async def create_push_session(
        self, request: PushSessionCreateRequest
    ) -> PushSessionCreateResponse:
        """``POST /sync/push-sessions``: a staging session or ``already_committed``."""
        return await self._call(
            "push_session_create", "POST", "/sync/push-sessions", PushSessionCreateResponse,
            body=request,
        )

    async def upload_push_chunk(
        self, push_id: str, request: PushSessionChunkRequest
    ) -> PushSessionChunkResponse:
        """``POST /sync/push-sessions/{push_id}/chunks``."""
        return await self._call(
            "push_chunk_upload", "POST", f"/sync/push-sessions/{_segment(push_id)}/chunks",
            PushSessionChunkResponse, body=request,
        )

    async def commit_push_session(self, push_id: str) -> PushSessionCommitResponse:
        """``POST /sync/push-sessions/{push_id}/commit`` (no body)."""
        return await self._call(
            "push_session_commit", "POST", f"/sync/push-sessions/{_segment(push_id)}/commit",
            PushSessionCommitResponse,
        )

    async def delete_push_session(self, push_id: str) -> bool:
        """Best-effort ``DELETE /sync/push-sessions/{push_id}``; never raises."""
        return await self._best_effort_delete(
            "push_session_delete", f"/sync/push-sessions/{_segment(push_id)}"
        )

    async def committed_bundle_rows(
        self, bundle_seq: int, max_rows: int, after_row_ordinal: int | None = None
    ) -> CommittedBundleRowsResponse:
        """``GET /sync/committed-bundles/{seq}/rows``; omit ``after_row_ordinal`` on page one."""
        params: dict[str, int] = {}
        if after_row_ordinal is not None:
            params["after_row_ordinal"] = after_row_ordinal
        params["max_rows"] = max_rows
        return await self._call(
            "committed_bundle_rows", "GET", f"/sync/committed-bundles/{bundle_seq}/rows",
            CommittedBundleRowsResponse, params=params,
        )

    # -- pull and snapshots ----------------------------------------------------------------

    async def pull(
        self, after_bundle_seq: int, max_bundles: int, target_bundle_seq: int = 0
    ) -> PullResponse:
        """``GET /sync/pull`` (retried as ``pull_request``); target sent only when > 0."""
        params = {"after_bundle_seq": after_bundle_seq, "max_bundles": max_bundles}
        if target_bundle_seq > 0:
            params["target_bundle_seq"] = target_bundle_seq
        return await self._call(
            "pull_request", "GET", "/sync/pull", PullResponse, params=params, retried=True
        )

    async def create_snapshot_session(
        self, source_replacement: SnapshotSourceReplacement | None = None
    ) -> SnapshotSession:
        """``POST /sync/snapshot-sessions``; a body only when rotating the source."""
        body = (
            SnapshotSessionCreateRequest(source_replacement=source_replacement)
            if source_replacement is not None
            else None
        )
        return await self._call(
            "snapshot_session_create", "POST", "/sync/snapshot-sessions", SnapshotSession,
            body=body, retried=True,
        )

    async def snapshot_chunk(
        self, snapshot_id: str, after_row_ordinal: int, max_rows: int
    ) -> SnapshotChunkResponse:
        """``GET /sync/snapshot-sessions/{id}`` (retried as ``snapshot_chunk_fetch``)."""
        return await self._call(
            "snapshot_chunk_fetch", "GET", f"/sync/snapshot-sessions/{_segment(snapshot_id)}",
            SnapshotChunkResponse,
            params={"after_row_ordinal": after_row_ordinal, "max_rows": max_rows},
            retried=True,
        )

    async def delete_snapshot_session(self, snapshot_id: str) -> bool:
        """Best-effort ``DELETE /sync/snapshot-sessions/{id}``; never raises."""
        return await self._best_effort_delete(
            "snapshot_session_delete", f"/sync/snapshot-sessions/{_segment(snapshot_id)}"
        )


    # -- watch (§9.4) -------------------------------------------------------------------

    @asynccontextmanager
    async def watch(
        self, after_bundle_seq: int
    ) -> AsyncIterator[AsyncIterator[BundleChangeEvent]]:
        """Open ``GET /sync/watch?after_bundle_seq=N`` and yield its ``bundle`` events.

        Use as ``async with transport.watch(seq) as events: async for event in events``.
        Opening is one attempt (no retry); a non-200 answer raises the typed error of the
        response (``BundleChangeWatchForbiddenError`` for 403, ``UnexpectedStatusError`` for a
        bare 404...). Events are wake-up hints only; the data always comes through pull. The
        iterator ends when the server closes the stream; leaving the ``async with`` closes it.
        A malformed ``bundle`` event raises
        :class:`~oversync_sa.client.errors.ProtocolViolationError`.
        """
        if after_bundle_seq < 0:
            raise ValueError("after_bundle_seq must be >= 0")
        request = self._http.build_request(
            "GET",
            f"{self.base_url}/sync/watch",
            params={"after_bundle_seq": after_bundle_seq},
            headers={**await self._headers(json_body=False), "Accept": "text/event-stream"},
            timeout=self._stream_timeout,
        )
        response = await self._http.send(request, stream=True)
        try:
            if response.status_code != 200:
                await response.aread()
                raise _error_for_response("bundle_change_watch", response)
            yield _bundle_events(response)
        finally:
            await response.aclose()


async def _bundle_events(response: httpx.Response) -> AsyncIterator[BundleChangeEvent]:
    async for event in iter_sse_events(response.aiter_bytes()):
        if event.event != "bundle":
            continue
        try:
            yield msgspec.json.decode(event.data, type=BundleChangeEvent)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolViolationError(
                "bundle_change_watch", f"decode bundle watch event: {exc}"
            ) from exc


def _segment(value: str) -> str:
    """Escape one path segment (``/`` included) as Go's ``url.PathEscape`` would need."""
    return quote(value, safe="")
