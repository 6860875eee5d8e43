"""One device as a child process: open a client on a SQLite file, run steps, exit.

``python -m tests.crash._device DB URL USER STEP...`` (run from the repository root). The crash
tests run it with ``OVERSYNC_CRASH_POINT`` set so that it dies by ``SIGKILL`` inside a step,
then run it again without the variable on the same file to let it continue.

Steps, in order:

* ``attach`` - ``attach(USER)``, waiting out ``retry_later``;
* ``insert:PREFIX:N`` - one local transaction writing N users and one post per user
  (ids from :func:`row_ids`, so the test knows exactly what was written);
* ``push``, ``pull``, ``sync``, ``rebuild``, ``detach`` - the client operation of that name.

Each finished step prints ``STEP RESULT`` on stdout. Exit status: 0 when every step finished,
:data:`EXIT_SYNC_ERROR` when a step raised a typed library error (e.g. the server was down),
anything else is a bug (an untyped exception escaped the client).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback
import uuid
from pathlib import Path
from typing import Any

import httpx

from examples.business_models import BusinessBase
from oversync_sa.client import SyncClient
from oversync_sa.client.config import ClientConfig, RetryPolicy
from oversync_sa.errors import OversyncError

EXIT_SYNC_ERROR = 3
SCHEMA = "business"
#: Small limits: a six-row push is three chunks, a six-row snapshot three chunks.
CHUNK = 2
_NAMESPACE = uuid.UUID("5d1b6a52-31c1-4a53-9a0e-4f1c2b0e7c11")
# Retries stay quick: a dead server answers "connection refused" at once.
_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)


def row_ids(prefix: str, count: int) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """The user ids and post ids ``insert:PREFIX:COUNT`` writes."""
    users = [uuid.uuid5(_NAMESPACE, f"{prefix}/user/{i}") for i in range(count)]
    posts = [uuid.uuid5(_NAMESPACE, f"{prefix}/post/{i}") for i in range(count)]
    return users, posts


class _Device:
    def __init__(self, client: SyncClient, user: str) -> None:
        self.client = client
        self.user = user

    async def attach(self) -> Any:
        result = await self.client.attach(self.user)
        for _ in range(100):
            if result.status.value != "retry_later":
                break
            await asyncio.sleep(max(result.retry_after, 0.05))
            result = await self.client.attach(self.user)
        return result.outcome

    async def insert(self, prefix: str, count: int) -> int:
        users, posts = row_ids(prefix, count)
        engine = self.client.runtime.engine
        async with engine.begin() as conn:
            for index, (user_id, post_id) in enumerate(zip(users, posts, strict=True)):
                await conn.exec_driver_sql(
                    "INSERT INTO users (id, name, email) VALUES (?, ?, ?)",
                    (user_id.bytes, f"{prefix}-{index}", f"{prefix}-{index}@example.com"),
                )
                await conn.exec_driver_sql(
                    "INSERT INTO posts (id, title, content, author_id) VALUES (?, ?, ?, ?)",
                    (post_id.bytes, f"{prefix}-post-{index}", "body", user_id.bytes),
                )
        return 2 * count

    async def run(self, step: str) -> Any:
        name, _, arguments = step.partition(":")
        if name == "insert":
            prefix, _, count = arguments.partition(":")
            return await self.insert(prefix, int(count))
        if name == "attach":
            return await self.attach()
        if name == "push":
            return (await self.client.push_pending()).outcome
        if name == "pull":
            return (await self.client.pull_to_stable()).outcome
        if name == "sync":
            report = await self.client.sync()
            return f"{report.push_outcome}/{report.remote_outcome}"
        if name == "rebuild":
            return (await self.client.rebuild()).outcome
        if name == "detach":
            return (await self.client.detach()).outcome
        raise SystemExit(f"unknown step {step!r}")


async def _token_provider(url: str, user: str) -> Any:
    cache: list[str] = []

    async def token() -> str:
        if not cache:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                resp = await http.post("/dummy-signin", json={"user": user, "password": "x"})
                resp.raise_for_status()
                cache.append(str(resp.json()["token"]))
        return cache[0]

    return token


async def main(db: Path, url: str, user: str, steps: list[str]) -> int:
    config = ClientConfig.from_models(
        BusinessBase, SCHEMA, upload_limit=CHUNK, download_limit=CHUNK,
        snapshot_chunk_rows=CHUNK, retry_policy=_RETRY,
    )
    client = await SyncClient.create(
        db, url, await _token_provider(url, user), config, models=BusinessBase
    )
    try:
        await client.open()
        device = _Device(client, user)
        for step in steps:
            result = await device.run(step)
            print(step, result, flush=True)
    except (OversyncError, httpx.TransportError):
        traceback.print_exc()
        return EXIT_SYNC_ERROR
    finally:
        await client.close()
        await client.runtime.engine.dispose()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("url")
    parser.add_argument("user")
    parser.add_argument("steps", nargs="+")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.db, args.url, args.user, args.steps)))
