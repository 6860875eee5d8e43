"""Responses written byte-for-byte the way the Go handlers write them.

Go's ``json.Encoder`` sends ``Content-Type: application/json`` (no charset) and ends the body
with a newline; msgspec keeps the wire Structs' field order and omit-empty rules, and writes
``msgspec.Raw`` payloads through untouched. The SSE helpers frame ``GET /sync/watch``
(SERVER.md §7.4).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from litestar import Response
from litestar.types import Send

from oversync_sa.errors import WireError

__all__ = [
    "JSON_MEDIA_TYPE",
    "SSE_HEADERS",
    "SSE_HEARTBEAT",
    "SSE_MEDIA_TYPE",
    "encode_json",
    "error_response",
    "json_response",
    "send_raw_response",
    "sse_event",
]

JSON_MEDIA_TYPE: Final = "application/json"
SSE_MEDIA_TYPE: Final = "text/event-stream"
#: Headers of the watch stream besides its content type; they keep proxies from buffering it.
SSE_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: A comment frame that keeps idle connections open.
SSE_HEARTBEAT: Final = b": heartbeat\n\n"

_ENCODER = msgspec.json.Encoder()


def encode_json(value: Any) -> bytes:
    """``value`` as JSON plus the newline Go's encoder appends."""
    buffer = bytearray()
    _ENCODER.encode_into(value, buffer)
    buffer += b"\n"
    return bytes(buffer)


def json_response(
    value: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    """A JSON response with Go's framing; ``value`` is a wire Struct or plain JSON data."""
    return Response(
        content=encode_json(value),
        status_code=status_code,
        media_type=JSON_MEDIA_TYPE,
        headers=headers,
    )


def error_response(error: WireError, headers: dict[str, str] | None = None) -> Response[bytes]:
    """The contract's error body for ``error`` with its status."""
    return json_response(error.to_body(), error.status, headers)


async def send_raw_response(
    send: Send,
    status: int,
    body: bytes,
    media_type: str,
    *,
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Answer from ASGI middleware, where no exception handler would see a raised error."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode("latin-1")),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def sse_event(event: str, data: Any) -> bytes:
    """One SSE frame: ``event: <event>\\ndata: <compact JSON>\\n\\n``.

    ``data`` must encode to a single line, which compact JSON always does.
    """
    return b"event: " + event.encode() + b"\ndata: " + _ENCODER.encode(data) + b"\n\n"
