"""Watch mode (§9.4): SSE parsing, SyncTransport.watch, and the watch-aware download loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from oversync_sa.client import (
    BundleChangeWatchMode,
    DownloadMode,
    ProtocolViolationError,
    SyncClient,
    SyncTransport,
    UnexpectedStatusError,
)
from oversync_sa.client.sse import MAX_LINE_BYTES, SSEEvent, iter_lines, iter_sse_events
from oversync_sa.errors import BundleChangeWatchForbiddenError
from tests.client.facade.server import (
    BASE_URL,
    SyncServer,
    attach_retrying,
    attached,
    bundle_event,
    config,
    error,
    eventually,
    make_client,
    query,
    sse,
    user_row,
)


async def _feed(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def events_of(*chunks: bytes) -> list[SSEEvent]:
    return [e async for e in iter_sse_events(_feed(*chunks))]


# --------------------------------------------------------------------------- SSE parser


async def test_sse_parses_events_comments_and_multiline_data() -> None:
    parsed = await events_of(
        b": heartbeat\n\n",
        b"event: bundle\ndata: {\"a\":\n",
        b"data:1}\nid: 7\nretry: 10\n\n",
        b"data: only data\n\nevent: x\n",  # the last event is never dispatched
    )
    assert parsed == [SSEEvent("bundle", '{"a":\n1}'), SSEEvent("", "only data")]


@pytest.mark.parametrize(
    "chunks",
    [
        (b"a\r\nb\rc\n",),
        (b"a\r", b"\nb\r", b"c\n"),  # CRLF split across chunks is one terminator
        (b"a\r\nb\r", b"c"),  # unterminated last line
    ],
)
async def test_sse_line_endings(chunks: tuple[bytes, ...]) -> None:
    assert [line async for line in iter_lines(_feed(*chunks))] == ["a", "b", "c"]


async def test_sse_rejects_overlong_lines() -> None:
    with pytest.raises(ProtocolViolationError, match="exceeds"):
        await events_of(b"data: " + b"x" * MAX_LINE_BYTES + b"\n")
    with pytest.raises(ProtocolViolationError, match="exceeds"):  # no terminator at all
        await events_of(*[b"y" * 65536] * 17)


async def test_sse_field_without_colon_is_an_empty_value() -> None:
    assert await events_of(b"event: bundle\ndata\n\n") == [SSEEvent("bundle", "")]


# --------------------------------------------------------------------------- transport


def transport_for(handler: httpx.MockTransport) -> SyncTransport:
    return SyncTransport(BASE_URL + "/", lambda: "tok", source_id=lambda: "src-1",
                         transport=handler)


async def test_transport_watch_streams_bundle_events() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse(": heartbeat\n\n", "event: other\ndata: {}\n\n", bundle_event(4),
                   'event: bundle\ndata: {"bundle_seq":5,"extra":true}\n\n')

    transport = transport_for(httpx.MockTransport(handler))
    async with transport.watch(3) as events:
        received = [e.bundle_seq async for e in events]
    assert received == [4, 5]
    (request,) = seen
    assert request.url.path == "/sync/watch"
    assert request.url.params["after_bundle_seq"] == "3"
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers["Oversync-Source-ID"] == "src-1"
    assert request.extensions["timeout"]["read"] is None  # heartbeats, not a timeout (§12.45)
    assert request.extensions["timeout"]["connect"] is not None
    await transport.aclose()


async def test_transport_watch_rejects_malformed_events() -> None:
    transport = transport_for(httpx.MockTransport(
        lambda _r: sse("event: bundle\ndata: not json\n\n")
    ))
    async with transport.watch(0) as events:
        with pytest.raises(ProtocolViolationError, match="decode bundle watch event"):
            await anext(events)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (error(403, "bundle_change_watch_forbidden"), BundleChangeWatchForbiddenError),
        (httpx.Response(404, text="nope"), UnexpectedStatusError),
    ],
)
async def test_transport_watch_maps_error_statuses(
    reply: httpx.Response, expected: type[Exception]
) -> None:
    calls: list[int] = []

    def handler(_request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return reply

    transport = transport_for(httpx.MockTransport(handler))
    with pytest.raises(expected):
        async with transport.watch(0):
            pass
    assert calls == [1]  # opening the stream is never retried


async def test_transport_watch_rejects_negative_checkpoints() -> None:
    transport = transport_for(httpx.MockTransport(lambda _r: sse()))
    with pytest.raises(ValueError, match="after_bundle_seq"):
        async with transport.watch(-1):
            pass


# --------------------------------------------------------------------------- watch loop


def watch_server() -> SyncServer:
    server = SyncServer()
    server.features["bundle_change_watch"] = True
    return server


async def watch_client(
    tmp_path: Path, server: SyncServer, **overrides: float
) -> SyncClient:
    options: dict[str, object] = {
        "bundle_change_watch_mode": BundleChangeWatchMode.AUTO,
        "watch_fallback_interval": 60.0, "backoff_min": 0.01, "backoff_max": 0.04,
    }
    options.update(overrides)
    return await attached(await make_client(tmp_path / "c.db", server, config(**options)))


@pytest.fixture
async def cleanup() -> AsyncIterator[list[SyncClient]]:
    clients: list[SyncClient] = []
    yield clients
    for client in clients:
        await client.close()
        await client.runtime.engine.dispose()


async def has_user(client: SyncClient, key: str) -> bool:
    return (key,) in await query(client, "SELECT id FROM users")


async def test_watch_event_triggers_a_pull(tmp_path: Path, cleanup: list[SyncClient]) -> None:
    server = watch_server()
    hold = asyncio.Event()
    send = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b": heartbeat\n\n"
        await send.wait()
        yield bundle_event(1).encode()
        await hold.wait()

    server.watch = [httpx.Response(200, headers={"content-type": "text/event-stream"},
                                   content=body())]
    client = await watch_client(tmp_path, server)
    cleanup.append(client)
    await client.start()
    await eventually(lambda: client.background_status.watch_connected)
    assert client.background_status.download_mode is DownloadMode.WATCH
    assert server.named("pull") == []  # no pull before the first event
    server.commit_external(user_row("x", "X"))
    send.set()
    await eventually(lambda: has_user(client, "x"))
    assert len(server.named("pull")) == 1
    assert len(server.named("watch")) == 1
    assert server.named("capabilities")[0].url.path == "/sync/capabilities"
    hold.set()


async def test_events_at_or_below_the_checkpoint_do_not_pull(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    server = watch_server()
    hold = asyncio.Event()
    server.watch = [sse(bundle_event(1), bundle_event(1), bundle_event(2), hold=hold)]
    server.commit_external(user_row("x", "X"))
    server.commit_external(user_row("y", "Y"))
    client = await watch_client(tmp_path, server)
    cleanup.append(client)
    await client.start()
    await eventually(lambda: has_user(client, "y"))
    await asyncio.sleep(0.05)
    # The first event pulls to 2; the repeated 1 and the 2 are already covered.
    assert len(server.named("pull")) == 1
    hold.set()


async def test_fallback_interval_pulls_while_the_stream_is_idle(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    server = watch_server()
    hold = asyncio.Event()
    server.watch = [sse(": heartbeat\n\n", hold=hold)]
    client = await watch_client(tmp_path, server, watch_fallback_interval=0.02)
    cleanup.append(client)
    await client.start()
    server.commit_external(user_row("x", "X"))
    await eventually(lambda: has_user(client, "x"))
    await eventually(lambda: len(server.named("pull")) >= 3)
    assert len(server.named("watch")) == 1  # same stream throughout
    hold.set()


async def test_disconnects_reconnect_with_a_fallback_pull(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    server = watch_server()
    server.watch = [lambda _r: sse(": heartbeat\n\n")]  # every stream ends right away
    errors: list[BaseException] = []
    client = await watch_client(tmp_path, server, backoff_min=0.02, backoff_max=0.02)
    cleanup.append(client)
    # The upload loop would take the client lock every 20 ms; a fallback pull that meets it
    # loses to contention (legitimately, the lock never waits) and the count below would depend
    # on the machine's load.
    client.pause_uploads()
    await client.start(on_error=lambda _loop, exc: errors.append(exc))
    await eventually(lambda: len(server.named("watch")) >= 3)
    await client.stop()
    watches, pulls = len(server.named("watch")), len(server.named("pull"))
    assert pulls >= watches - 1  # one fallback pull after each ended stream
    assert errors == []  # a server closing the stream is not an error


async def test_reconnect_backoff_grows_when_opening_fails(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    server = watch_server()
    server.watch = [error(500, "bundle_change_watch_failed")]
    errors: list[BaseException] = []
    client = await watch_client(tmp_path, server, backoff_min=0.02, backoff_max=0.16)
    cleanup.append(client)
    await client.start(on_error=lambda _loop, exc: errors.append(exc))
    await eventually(lambda: client.background_status.download.backoff == 0.16)
    await asyncio.sleep(0.1)
    # 0.02 + 0.04 + 0.08 + 0.16 ... : a handful of attempts, not a tight loop.
    assert 3 <= len(server.named("watch")) <= 7
    assert errors
    assert all(
        getattr(e, "code", None) == "bundle_change_watch_failed" for e in errors
    )


async def test_forbidden_watch_switches_to_polling(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    server = watch_server()
    server.watch = [error(403, "bundle_change_watch_forbidden")]
    client = await watch_client(tmp_path, server)
    cleanup.append(client)
    await client.start()
    await eventually(lambda: client.background_status.download_mode is DownloadMode.POLLING)
    server.commit_external(user_row("x", "X"))
    await eventually(lambda: has_user(client, "x"))
    await asyncio.sleep(0.05)
    assert len(server.named("watch")) == 1


@pytest.mark.parametrize("status", [404, 503])
async def test_unavailable_watch_polls_at_the_fallback_interval(
    tmp_path: Path, cleanup: list[SyncClient], status: int
) -> None:
    server = watch_server()
    server.watch = [httpx.Response(status, text="unavailable")]
    client = await watch_client(
        tmp_path, server, backoff_min=0.001, backoff_max=0.002, watch_fallback_interval=0.05
    )
    cleanup.append(client)
    await client.start()
    server.commit_external(user_row("x", "X"))
    await eventually(lambda: has_user(client, "x"))  # the fallback pull after each attempt
    await asyncio.sleep(0.2)
    attempts = len(server.named("watch"))
    assert 2 <= attempts <= 7  # ~every 50 ms, not every 1-2 ms
    assert client.background_status.download_mode is DownloadMode.WATCH


async def test_not_advertised_means_polling_without_watch_requests(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    server = SyncServer()  # bundle_change_watch: False
    client = await watch_client(tmp_path, server)
    cleanup.append(client)
    await client.start()
    await eventually(lambda: client.background_status.download_mode is DownloadMode.POLLING)
    server.commit_external(user_row("x", "X"))
    await eventually(lambda: has_user(client, "x"))
    assert server.named("watch") == []


async def test_capabilities_failure_means_polling(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    server = watch_server()
    client = await watch_client(tmp_path, server)
    cleanup.append(client)
    server.push_script("capabilities", httpx.Response(500, text="broken"))
    await client.start()
    await eventually(lambda: client.background_status.download_mode is DownloadMode.POLLING)
    assert server.named("watch") == []


async def test_watch_is_chosen_once_attached_after_start(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    server = watch_server()
    hold = asyncio.Event()
    server.watch = [sse(": heartbeat\n\n", hold=hold)]
    client = await make_client(tmp_path / "c.db", server, config(
        bundle_change_watch_mode=BundleChangeWatchMode.AUTO, backoff_min=0.01,
    ))
    cleanup.append(client)
    await client.open()
    await client.start()
    await asyncio.sleep(0.05)
    assert server.requests == []
    await attach_retrying(client)  # Go would poll forever after this (§12.45)
    await eventually(lambda: client.background_status.watch_connected)
    hold.set()


async def test_invalid_event_tears_the_stream_down(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    server = watch_server()
    hold = asyncio.Event()
    server.watch = [
        sse('event: bundle\ndata: {"bundle_seq":0}\n\n'),
        sse(": heartbeat\n\n", hold=hold),
    ]
    errors: list[BaseException] = []
    client = await watch_client(tmp_path, server)
    cleanup.append(client)
    await client.start(on_error=lambda _loop, exc: errors.append(exc))
    await eventually(lambda: len(server.named("watch")) == 2)
    assert [str(e) for e in errors] == [
        "bundle_change_watch: bundle watch event missing bundle_seq"
    ]
    hold.set()


async def test_watch_pull_errors_reconnect_without_extra_pull(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    server = watch_server()
    hold = asyncio.Event()
    server.watch = [sse(bundle_event(1)), sse(": heartbeat\n\n", hold=hold)]
    server.commit_external(user_row("x", "X"))
    server.push_script("pull", httpx.Response(500, text="pull broke"))
    errors: list[BaseException] = []
    client = await watch_client(tmp_path, server)
    cleanup.append(client)
    client.pause_uploads()  # no lock contention from the upload loop in this test
    await client.start(on_error=lambda _loop, exc: errors.append(exc))
    await eventually(lambda: len(server.named("watch")) == 2)
    await eventually(lambda: client.background_status.watch_connected)
    assert len(server.named("pull")) == 1  # the failed event pull; no fallback pull after it
    assert len(errors) == 1
    assert isinstance(errors[0], UnexpectedStatusError)
    hold.set()


async def test_pull_lost_to_contention_is_retried_on_the_same_stream(
    tmp_path: Path, cleanup: list[SyncClient]
) -> None:
    server = watch_server()
    hold = asyncio.Event()
    send = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        await send.wait()
        yield bundle_event(1).encode()
        await hold.wait()

    server.watch = [httpx.Response(200, content=body())]
    server.commit_external(user_row("x", "X"))
    errors: list[BaseException] = []
    client = await watch_client(tmp_path, server)
    cleanup.append(client)
    client.pause_uploads()
    await client.start(on_error=lambda _loop, exc: errors.append(exc))
    await eventually(lambda: client.background_status.watch_connected)
    async with client.runtime.operation("test holds the lock"):
        send.set()
        await asyncio.sleep(0.03)  # the event's pull loses the lock at least once
        assert server.named("pull") == []
    await eventually(lambda: has_user(client, "x"))
    assert len(server.named("watch")) == 1  # contention does not tear the stream down
    assert errors == []
    hold.set()
