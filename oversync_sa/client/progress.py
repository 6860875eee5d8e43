"""Progress callbacks for long-running client work.

Every long operation accepts an optional :data:`ProgressCallback` called with
``(done, total)``; the unit depends on the operation and is documented where the callback is
accepted:

* snapshot rebuild (``rebuild``, pull falling back to a snapshot): rows staged / snapshot rows;
* push upload (``push_pending``): rows uploaded / rows in the bundle, once per chunk;
* pull (``pull_to_stable``'s ``bundle_progress``): bundle sequence span covered / span to the
  frozen stable ceiling, once per applied bundle.

Callbacks may be plain functions or coroutine functions. They run inside the operation (the
client lock is held), so they must be quick and must not call back into the client.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

__all__ = ["ProgressCallback", "report_progress"]

#: ``callback(done, total)``; may return an awaitable, which is awaited.
ProgressCallback = Callable[[int, int], Awaitable[None] | None]


async def report_progress(progress: ProgressCallback | None, done: int, total: int) -> None:
    """Call ``progress(done, total)`` if given, awaiting it when it is a coroutine function."""
    if progress is None:
        return
    outcome = progress(done, total)
    if inspect.isawaitable(outcome):
        await outcome
