"""A minimal Server-Sent Events reader for the ``/sync/watch`` stream (CLIENT.md §9.4).

Only what the protocol uses is interpreted: ``event:`` and ``data:`` fields (one leading space
stripped, several ``data:`` lines joined with ``\\n``), comment lines starting with ``:`` (the
server's ``: heartbeat``), and a blank line dispatching the event. ``id:``/``retry:`` and
unknown fields are ignored. Lines may end in ``\\n``, ``\\r\\n`` or ``\\r`` (the SSE grammar;
the Go client only knows the first two). A line longer than :data:`MAX_LINE_BYTES` (1 MiB, the
Go client's limit) is a :class:`~oversync_sa.client.errors.ProtocolViolationError`, so a broken
server cannot make the client buffer without bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Final

from oversync_sa.client.errors import ProtocolViolationError

__all__ = ["MAX_LINE_BYTES", "SSEEvent", "iter_lines", "iter_sse_events"]

#: Longest accepted line, in bytes, excluding its terminator.
MAX_LINE_BYTES: Final = 1024 * 1024

_OPERATION: Final = "bundle_change_watch"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event; ``event`` is ``""`` when the server sent no ``event:`` field."""

    event: str
    data: str


def _too_long() -> ProtocolViolationError:
    return ProtocolViolationError(_OPERATION, f"watch stream line exceeds {MAX_LINE_BYTES} bytes")


async def iter_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """Split a byte stream into decoded lines (terminators removed).

    A ``\\r`` at the end of a chunk is held back until the next chunk shows whether a ``\\n``
    follows, so ``\\r\\n`` split across chunks is one terminator, not two.
    """
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        start = 0
        while True:
            cr, lf = buffer.find(b"\r", start), buffer.find(b"\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            if buffer[end] == 0x0D and end + 1 == len(buffer):
                break  # maybe the first half of \r\n
            if end - start > MAX_LINE_BYTES:
                raise _too_long()
            yield buffer[start:end].decode("utf-8", errors="replace")
            start = end + 2 if buffer[end : end + 2] == b"\r\n" else end + 1
        del buffer[:start]
        if len(buffer) > MAX_LINE_BYTES + 1:
            raise _too_long()
    if buffer:
        # An unterminated last line (or a lone trailing \r) still counts as a line.
        yield bytes(buffer).rstrip(b"\r").decode("utf-8", errors="replace")


async def iter_sse_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Parse ``chunks`` into dispatched events; an undispatched trailing event is dropped."""
    event = ""
    data: list[str] = []
    async for line in iter_lines(chunks):
        if not line:
            if event or data:
                yield SSEEvent(event, "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
