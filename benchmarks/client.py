"""Client hot paths against raw SQLite: capture, pull apply, snapshot rebuild, 1M-row RSS (issue 5).

Every line is the real client code beside a raw-SQLite baseline over the *same rows in the same
run*: one ``executemany`` of those rows in one transaction into an identical table that has no
triggers (a fresh database file each time, same journal mode).

* **capture** - 10k and 100k application INSERTs in one transaction on a managed table, so the
  six sync triggers fire and coalesce every write into ``_sync_dirty_rows``. Both sizes are
  printed to show that capture stays linear (each dirty row asks for ``MAX(dirty_ordinal)``).
  Target: >= 40,000 rows/s at 100k rows (absolute).
* **pull apply** - 100k rows in 100 bundles through ``SyncClient.pull_to_stable`` (paging,
  validation, ``apply_bundle``), served by an in-process fake server (``httpx.MockTransport``)
  whose pages are encoded before the clock starts. Target: >= 40 % of the raw rate.
* **snapshot rebuild** - 100k rows through ``SyncClient.rebuild`` (session, chunk download into
  the stage, atomic swap), chunks pre-encoded as above. No throughput target.
* **snapshot RSS** - a 1M-row rebuild in a *fresh Python process*; the line's ``peak RSS`` is
  that process's whole peak RSS (``VmHWM``, interpreter and imports included), the fake
  server generating each chunk on demand so that it does not hold the snapshot either. The
  baseline process streams the same rows into a plain table with ``executemany``.
  Target: < 250 MB (250,000,000 bytes).

No PostgreSQL is involved, so the figures measure the client alone. ``python -m benchmarks``
runs this module with the others; ``python -m benchmarks.client`` runs it on its own (no
PostgreSQL needed) with the same table output and ``results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from benchmarks._harness import BenchContext, Measurement, StageClock, measure
from benchmarks._servers import proc_status_kib
from oversync_sa.client import (
    ClientConfig,
    RetryPolicy,
    SyncClient,
    SyncTable,
    pull as pull_mod,
    snapshot as snapshot_mod,
)

__all__ = ["ClientMeasurement", "main", "run"]

NAME = "client"
SCHEMA = "business"
TABLE = "items"
PLAIN_TABLE = "items_plain"
USER = "bench-user"
BASE_URL = "http://sync.bench"

CAPTURE_ROWS = 100_000
CAPTURE_SMALL_ROWS = 10_000
CAPTURE_BATCH = 10_000
#: Page cache of the variant capture line: enough to keep a 100k-row transaction's dirty pages
#: in memory (the default 2 MiB spills them to the WAL mid-transaction).
CAPTURE_CACHE_KIB = 64 * 1024
PULL_ROWS = 100_000
PULL_BUNDLES = 100
PULL_PAGE_BUNDLES = 10
SNAPSHOT_ROWS = 100_000
RSS_ROWS = 1_000_000
SNAPSHOT_CHUNK_ROWS = 1_000  # the client's default ``snapshot_chunk_rows``

CAPTURE_TARGET_ROWS_PER_SECOND = 40_000.0
APPLY_TARGET = 0.4
RSS_LIMIT_KIB = 250_000_000 // 1024  # 250 MB

_COLUMNS = "id, name, email, score, balance, active, updated_at"
_INSERT_SQL = f"INSERT INTO {{table}} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_STAMP = "2026-03-24T18:42:11.120Z"

Row = tuple[str, str, str, int, float, int, str]
T = TypeVar("T")


def _ddl(table: str) -> str:
    return (
        f"CREATE TABLE {table} (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
        " email TEXT NOT NULL, score INTEGER NOT NULL, balance REAL, active INTEGER NOT NULL,"
        " updated_at TEXT NOT NULL)"
    )


def _row(n: int) -> Row:
    return (f"item-{n:09d}", f"Item {n}", f"item{n}@example.com", n % 1000, n * 0.25, n % 2,
            _STAMP)


def _rows(start: int, stop: int) -> list[Row]:
    return [_row(n) for n in range(start, stop)]


def _payload(row: Row) -> dict[str, Any]:
    return {
        "id": row[0], "name": row[1], "email": row[2], "score": row[3], "balance": row[4],
        "active": row[5], "updated_at": row[6],
    }


def _wire_row(row: Row, version: int, *, op: str | None = "INSERT") -> dict[str, Any]:
    wire: dict[str, Any] = {"schema": SCHEMA, "table": TABLE, "key": {"id": row[0]}}
    if op is not None:
        wire["op"] = op
    wire["row_version"] = version
    wire["payload"] = _payload(row)
    return wire


@dataclass
class ClientMeasurement(Measurement):
    """A line whose target may be absolute rows/s or a peak-RSS ceiling instead of a ratio.

    ``target_ratio`` 0 means "no ratio target"; the absolute targets are spelled out in notes
    because the shared table prints only the ratio target.
    """

    min_rows_per_second: float | None = None
    max_peak_rss_kib: int | None = None

    @property
    def meets_target(self) -> bool:
        met = self.ratio >= self.target_ratio
        if self.min_rows_per_second is not None:
            met = met and self.rows_per_second >= self.min_rows_per_second
        if self.max_peak_rss_kib is not None:
            met = met and 0 < self.peak_rss_kib <= self.max_peak_rss_kib
        return met

    def target_text(self) -> str:
        parts = [super().target_text()] if self.target_ratio > 0 else []
        if self.min_rows_per_second is not None:
            parts.append(f">= {self.min_rows_per_second:,.0f} rows/s")
        if self.max_peak_rss_kib is not None:
            parts.append(f"peak RSS <= {self.max_peak_rss_kib / 1024:,.0f} MiB")
        return ", ".join(parts) or "-"


async def _measure(
    ctx: BenchContext, operation: Callable[[], Awaitable[T]]
) -> tuple[T, Any, float]:
    """:func:`measure` plus the process CPU time of the call (all threads, incl. aiosqlite's).

    On a loaded shared machine wall time mostly measures waiting for a core; CPU time is the
    steadier figure, so every line also reports library and baseline CPU seconds.
    """
    started = time.process_time()
    result, sample = await measure(ctx, operation)
    return result, sample, time.process_time() - started


def _cpu_note(cpu: float, baseline_cpu: float) -> str:
    ratio = baseline_cpu / cpu if cpu > 0 else float("inf")
    return f"CPU time: {cpu:.3f} s vs baseline {baseline_cpu:.3f} s (CPU ratio {ratio:.3f})"


# ------------------------------------------------------------------------------ fake server


@dataclass
class _FakeServer:
    """Just enough of the protocol for open/attach, pull pages and snapshot chunks.

    ``pull_pages`` maps ``after_bundle_seq`` to a pre-encoded page; ``snapshot_chunk`` returns
    the encoded chunk after a row ordinal (pre-encoded, or generated on demand for 1M rows).
    """

    pull_pages: dict[int, bytes]
    snapshot_rows: int = 0
    snapshot_bundle_seq: int = 0
    snapshot_chunk: Callable[[int, int], bytes] | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if path == "/sync/capabilities":
            return httpx.Response(200, json={
                "protocol_version": "1", "schema_version": 1,
                "features": {"connect_lifecycle": True},
            })
        if path == "/sync/connect":
            return httpx.Response(200, json={"resolution": "initialize_empty"})
        if path == "/sync/pull":
            after = int(request.url.params["after_bundle_seq"])
            return _json_bytes(self.pull_pages[after])
        if path == "/sync/snapshot-sessions" and method == "POST":
            return httpx.Response(200, json={
                "snapshot_id": "snap-1", "snapshot_bundle_seq": self.snapshot_bundle_seq,
                "row_count": self.snapshot_rows, "byte_count": 0,
                "expires_at": "2099-01-01T00:00:00Z",
            })
        if path == "/sync/snapshot-sessions/snap-1" and method == "GET":
            assert self.snapshot_chunk is not None
            after = int(request.url.params["after_row_ordinal"])
            return _json_bytes(self.snapshot_chunk(after, int(request.url.params["max_rows"])))
        if path == "/sync/snapshot-sessions/snap-1" and method == "DELETE":
            return httpx.Response(204)
        raise AssertionError(f"unexpected request {method} {path}")


def _json_bytes(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "application/json"})


def _pull_pages(rows: list[Row], bundles: int, page_bundles: int) -> dict[int, bytes]:
    """Pages keyed by ``after_bundle_seq``; row versions are the bundle's sequence number."""
    per_bundle = len(rows) // bundles
    wire_bundles = [
        {
            "bundle_seq": seq, "source_id": "other-device", "source_bundle_id": seq,
            "row_count": per_bundle, "bundle_hash": "",
            "rows": [_wire_row(r, seq) for r in rows[(seq - 1) * per_bundle: seq * per_bundle]],
        }
        for seq in range(1, bundles + 1)
    ]
    pages: dict[int, bytes] = {}
    for start in range(0, bundles, page_bundles):
        page = wire_bundles[start: start + page_bundles]
        pages[start] = msgspec.json.encode({
            "stable_bundle_seq": bundles, "bundles": page,
            "has_more": start + page_bundles < bundles,
        })
    return pages


def _snapshot_chunk(total: int, bundle_seq: int, after: int, limit: int) -> bytes:
    stop = min(total, after + limit)
    return msgspec.json.encode({
        "snapshot_id": "snap-1", "snapshot_bundle_seq": bundle_seq,
        "rows": [_wire_row(_row(n), bundle_seq, op=None) for n in range(after, stop)],
        "next_row_ordinal": stop, "has_more": stop < total,
    })


def _snapshot_server(total: int, *, pre_encode: bool) -> _FakeServer:
    bundle_seq = 7
    if not pre_encode:
        return _FakeServer({}, total, bundle_seq,
                           lambda after, limit: _snapshot_chunk(total, bundle_seq, after, limit))
    chunks = {
        after: _snapshot_chunk(total, bundle_seq, after, SNAPSHOT_CHUNK_ROWS)
        for after in range(0, max(total, 1), SNAPSHOT_CHUNK_ROWS)
    }
    return _FakeServer({}, total, bundle_seq, lambda after, _limit: chunks[after])


# ------------------------------------------------------------------------------ databases


def _config(**overrides: Any) -> ClientConfig:
    return ClientConfig(
        SCHEMA, (SyncTable(TABLE, "id"),),
        retry_policy=RetryPolicy(initial_backoff=0.001, max_backoff=0.002), **overrides,
    )


def _plain_db(path: Path, cache_kib: int = 0) -> sqlite3.Connection:
    """A raw connection with the client's settings (WAL, foreign keys, explicit BEGIN).

    ``cache_kib`` > 0 sets the page cache of this connection (SQLite's default is 2 MiB).
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if cache_kib:
        conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
    return conn


async def _client(path: Path, server: _FakeServer | None, **config: Any) -> SyncClient:
    with _plain_db(path) as raw:
        raw.execute(_ddl(TABLE).replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
    transport = httpx.MockTransport(server.handler if server else _no_network)
    return await SyncClient.create(path, BASE_URL, lambda: "token", _config(**config),
                                   http_transport=transport)


def _no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"capture made a request: {request.method} {request.url}")


async def _attached(path: Path, server: _FakeServer, **config: Any) -> SyncClient:
    client = await _client(path, server, **config)
    await client.open()
    await client.attach(USER)
    return client


def _count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _raw_executemany(path: Path, batches: Iterator[list[Row]], cache_kib: int = 0) -> float:
    """The baseline: every batch ``executemany``'d into a trigger-less table, one transaction."""
    conn = _plain_db(path, cache_kib)
    try:
        conn.execute(_ddl(PLAIN_TABLE))
        sql = _INSERT_SQL.format(table=PLAIN_TABLE)
        started = time.perf_counter()
        conn.execute("BEGIN")
        for batch in batches:
            conn.executemany(sql, batch)
        conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


async def _raw_baseline(
    ctx: BenchContext, path: Path, rows: list[Row], cache_kib: int = 0
) -> tuple[float, float]:
    """Wall and CPU seconds of the raw ``executemany`` baseline."""
    _, sample, cpu = await _measure(
        ctx, lambda: asyncio.to_thread(_raw_executemany, path, iter([rows]), cache_kib)
    )
    return sample.seconds, cpu


# ------------------------------------------------------------------------------ capture


_DEFAULT_CACHE_NOTE = "no PRAGMA: the database file's default_cache_size, set by the client"


def _effective_cache_kib(conn: sqlite3.Connection) -> int:
    """The connection's page cache in KiB (``PRAGMA cache_size``: pages if > 0, -KiB if < 0)."""
    size = int(conn.execute("PRAGMA cache_size").fetchone()[0])
    return -size if size < 0 else size * int(conn.execute("PRAGMA page_size").fetchone()[0]) // 1024


def _capture_writes(path: Path, rows: list[Row], clock: StageClock, cache_kib: int) -> int:
    """Application writes on the managed table: ``executemany`` batches in one transaction.

    Returns the page cache (KiB) the connection actually had: without ``cache_kib`` it is the
    database's persisted default, which the client raises (``local_schema.DEFAULT_CACHE_KIB``).
    """
    conn = _plain_db(path, cache_kib)
    try:
        effective = _effective_cache_kib(conn)
        sql = _INSERT_SQL.format(table=TABLE)
        conn.execute("BEGIN")
        for start in range(0, len(rows), CAPTURE_BATCH):
            end = min(len(rows), start + CAPTURE_BATCH)
            with clock(f"rows {start + 1:,}-{end:,}"):
                conn.executemany(sql, rows[start:end])
        with clock("COMMIT"):
            conn.execute("COMMIT")
    finally:
        conn.close()
    return effective


async def _bench_capture(
    ctx: BenchContext, work: Path, full: int, cache_kib: int = 0
) -> ClientMeasurement:
    """``cache_kib``: the application connection's page cache (0 = the database's default)."""
    count = ctx.size(full)
    rows = _rows(0, count)
    path = work / f"capture-{count}-{cache_kib}.db"
    client = await _client(path, None)
    try:
        clock = StageClock()
        effective_kib, sample, cpu = await _measure(
            ctx, lambda: asyncio.to_thread(_capture_writes, path, rows, clock, cache_kib)
        )
    finally:
        await client.close()
    captured = _count(path, "SELECT COUNT(*) FROM _sync_dirty_rows")
    assert captured == count, (captured, count)
    baseline, baseline_cpu = await _raw_baseline(
        ctx, work / f"capture-{count}-{cache_kib}-raw.db", rows, cache_kib
    )
    stages = clock.stages()
    if len(stages) > 3:  # first, last batch and COMMIT are enough to show linearity
        stages = [stages[0], stages[-2], stages[-1]]
    met = count / sample.seconds >= CAPTURE_TARGET_ROWS_PER_SECOND
    cache_label = f", {cache_kib // 1024} MiB cache" if cache_kib else ""
    return ClientMeasurement(
        benchmark=NAME,
        name=f"capture ({count:,} rows, 1 tx{cache_label})",
        rows=count,
        seconds=sample.seconds,
        baseline="executemany of the same rows into an identical table without triggers",
        baseline_seconds=baseline, target_ratio=0.0,
        peak_rss_kib=sample.peak_rss_kib, python_peak_kib=sample.python_peak_kib,
        stages=stages, min_rows_per_second=CAPTURE_TARGET_ROWS_PER_SECOND,
        notes=[f"target: >= {CAPTURE_TARGET_ROWS_PER_SECOND:,.0f} rows/s with triggers"
               f" ({'met' if met else 'MISSED'}); {CAPTURE_BATCH:,}-row executemany batches;"
               f" app connection page cache {effective_kib / 1024:g} MiB"
               f" ({'PRAGMA cache_size, baseline too' if cache_kib else _DEFAULT_CACHE_NOTE})",
               _cpu_note(cpu, baseline_cpu)
               + f"; {count / cpu:,.0f} rows per CPU second"],
    )


# ------------------------------------------------------------------------------ pull apply


async def _bench_pull(ctx: BenchContext, work: Path) -> ClientMeasurement:
    count = ctx.size(PULL_ROWS, minimum=2)
    bundles = min(count, ctx.size(PULL_BUNDLES))
    count = (count // bundles) * bundles
    page_bundles = max(1, min(PULL_PAGE_BUNDLES, bundles // 10 or 1))
    rows = _rows(0, count)
    server = _FakeServer(_pull_pages(rows, bundles, page_bundles))
    path = work / "pull.db"
    client = await _attached(path, server, download_limit=page_bundles)
    clock = StageClock()
    transport = client.runtime.transport
    original_pull, original_apply = transport.pull, pull_mod.apply_bundle
    # Instance attribute / module global, both restored below: the code under test is unchanged.
    transport.pull = clock.wrap(  # type: ignore[method-assign,assignment]
        "fetch + decode pages (mock HTTP, msgspec)", original_pull)
    pull_mod.apply_bundle = clock.wrap(  # type: ignore[assignment]
        "apply_bundle (resolve + SQLite tx)", original_apply)
    try:
        report, sample, cpu = await _measure(ctx, client.pull_to_stable)
    finally:
        pull_mod.apply_bundle = original_apply
        transport.pull = original_pull  # type: ignore[method-assign]
        await client.close()
    assert report.outcome.value == "applied_incremental", report
    assert _count(path, f"SELECT COUNT(*) FROM {TABLE}") == count
    assert _count(path, "SELECT COUNT(*) FROM _sync_row_state") == count
    assert _count(path, "SELECT last_bundle_seq_seen FROM _sync_attachment_state") == bundles
    clock.add("rest (preconditions, status)",
              max(0.0, sample.seconds - sum(s.seconds for s in clock.stages())))
    baseline, baseline_cpu = await _raw_baseline(ctx, work / "pull-raw.db", rows)
    return ClientMeasurement(
        benchmark=NAME, name=f"pull apply ({count:,} rows, {bundles} bundles)", rows=count,
        seconds=sample.seconds, baseline="executemany of the same rows (one transaction)",
        baseline_seconds=baseline, target_ratio=APPLY_TARGET,
        peak_rss_kib=sample.peak_rss_kib, python_peak_kib=sample.python_peak_kib,
        stages=clock.stages(),
        notes=[f"{page_bundles} bundles per pull page, pages pre-encoded by the fake server",
               _cpu_note(cpu, baseline_cpu)],
    )


# ------------------------------------------------------------------------------ snapshot


async def _bench_snapshot(ctx: BenchContext, work: Path) -> ClientMeasurement:
    count = ctx.size(SNAPSHOT_ROWS)
    path = work / "snapshot.db"
    client = await _attached(path, _snapshot_server(count, pre_encode=True))
    clock = StageClock()
    original_download, original_swap = snapshot_mod._download, snapshot_mod._swap
    # Module globals swapped for timed wrappers (restored below); the code under test is the same.
    snapshot_mod._download = clock.wrap(  # type: ignore[assignment]
        "download + stage chunks", original_download)
    snapshot_mod._swap = clock.wrap(  # type: ignore[assignment]
        "swap (clear, apply stage, checkpoint)", original_swap)
    try:
        report, sample, cpu = await _measure(ctx, client.rebuild)
    finally:
        snapshot_mod._download, snapshot_mod._swap = original_download, original_swap
        await client.close()
    assert report.restore is not None, report
    assert report.restore.row_count == count, report
    assert _count(path, f"SELECT COUNT(*) FROM {TABLE}") == count
    assert _count(path, "SELECT COUNT(*) FROM _sync_snapshot_stage") == 0
    clock.add("rest (preconditions, session, status)",
              max(0.0, sample.seconds - sum(s.seconds for s in clock.stages())))
    baseline, baseline_cpu = await _raw_baseline(ctx, work / "snapshot-raw.db", _rows(0, count))
    return ClientMeasurement(
        benchmark=NAME, name=f"snapshot rebuild ({count:,} rows)", rows=count,
        seconds=sample.seconds, baseline="executemany of the same rows (one transaction)",
        baseline_seconds=baseline, target_ratio=0.0,
        peak_rss_kib=sample.peak_rss_kib, python_peak_kib=sample.python_peak_kib,
        stages=clock.stages(),
        notes=[f"no throughput target; {SNAPSHOT_CHUNK_ROWS:,} rows per chunk (pre-encoded)",
               _cpu_note(cpu, baseline_cpu)],
    )


# ------------------------------------------------------------------------------ RSS (child)


def _status_kib(field_name: str) -> int:
    """A ``kB`` field of this process's ``/proc`` status."""
    return proc_status_kib(os.getpid(), field_name)


def _peak_rss_kib() -> int:
    # VmHWM, not ru_maxrss: Linux carries the parent's peak into a child's ru_maxrss across
    # fork+exec, so the child would report the (bigger) benchmark runner's peak.
    peak = _status_kib("VmHWM")
    if peak:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss // 1024) if sys.platform == "darwin" else int(maxrss)


async def _child_rebuild(path: Path, rows: int) -> dict[str, Any]:
    client = await _attached(path, _snapshot_server(rows, pre_encode=False))
    try:
        start_rss = _status_kib("VmRSS")
        started = time.perf_counter()
        report = await client.rebuild()
        seconds = time.perf_counter() - started
    finally:
        await client.close()
    assert report.restore is not None, report
    assert report.restore.row_count == rows, report
    return {"seconds": seconds, "start_rss_kib": start_rss}


def _child_raw(path: Path, rows: int) -> dict[str, Any]:
    start_rss = _status_kib("VmRSS")
    batches = (_rows(s, min(rows, s + SNAPSHOT_CHUNK_ROWS))
               for s in range(0, rows, SNAPSHOT_CHUNK_ROWS))
    return {"seconds": _raw_executemany(path, batches), "start_rss_kib": start_rss}


def _child(kind: str, rows: int, path: Path) -> int:
    """Entry of the measuring subprocess: one JSON line with time and ``ru_maxrss``."""
    result = asyncio.run(_child_rebuild(path, rows)) if kind == "rebuild" else _child_raw(path,
                                                                                           rows)
    assert _count(path, f"SELECT COUNT(*) FROM {TABLE if kind == 'rebuild' else PLAIN_TABLE}") \
        == rows
    result.update(rows=rows, peak_rss_kib=_peak_rss_kib(), kind=kind)
    print(json.dumps(result))
    return 0


def _run_child(kind: str, rows: int, path: Path) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.client", "--child", kind, "--rows", str(rows),
         "--db", str(path)],
        cwd=root, env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


async def _bench_rss(ctx: BenchContext, work: Path) -> ClientMeasurement:
    count = ctx.size(RSS_ROWS)
    client = await asyncio.to_thread(_run_child, "rebuild", count, work / "rss.db")
    raw = await asyncio.to_thread(_run_child, "raw", count, work / "rss-raw.db")
    peak = int(client["peak_rss_kib"])
    met = 0 < peak <= RSS_LIMIT_KIB
    return ClientMeasurement(
        benchmark=NAME, name=f"snapshot RSS ({count:,} rows)", rows=count,
        seconds=float(client["seconds"]),
        baseline="executemany of the same rows, 1,000-row batches, fresh process",
        baseline_seconds=float(raw["seconds"]), target_ratio=0.0, peak_rss_kib=peak,
        max_peak_rss_kib=RSS_LIMIT_KIB,
        notes=[
            f"peak RSS = whole fresh process (VmHWM): {peak / 1024:,.1f} MiB, target"
            f" < 250 MB = {RSS_LIMIT_KIB / 1024:,.1f} MiB ({'met' if met else 'MISSED'})",
            f"client process RSS before the rebuild {int(client['start_rss_kib']) / 1024:,.1f}"
            f" MiB; raw baseline process peak {int(raw['peak_rss_kib']) / 1024:,.1f} MiB",
            "chunks generated on demand by the in-process fake server (its time is included)",
        ],
    )


# ------------------------------------------------------------------------------ entry


async def run(ctx: BenchContext) -> list[Measurement]:
    """Capture at two sizes, pull apply, snapshot rebuild and the 1M-row RSS line."""
    with tempfile.TemporaryDirectory(prefix="oversync-bench-client-") as tmp:
        work = Path(tmp)
        # Warm-up: imports, statement caches and first-use costs of every code path.
        warm = BenchContext(server=ctx.server, scale=min(ctx.scale, 0.01))
        warm_dir = work / "warm"
        warm_dir.mkdir()
        await _bench_capture(warm, warm_dir, CAPTURE_SMALL_ROWS)
        await _bench_pull(warm, warm_dir)
        await _bench_snapshot(warm, warm_dir)
        results: list[Measurement] = [
            await _bench_capture(ctx, work, CAPTURE_SMALL_ROWS),
            await _bench_capture(ctx, work, CAPTURE_ROWS),
            await _bench_capture(ctx, work, CAPTURE_ROWS, cache_kib=CAPTURE_CACHE_KIB),
            await _bench_pull(ctx, work),
            await _bench_snapshot(ctx, work),
            await _bench_rss(ctx, work),
        ]
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.client``: this module alone, without PostgreSQL."""
    from benchmarks._harness import print_table, write_results
    from oversync_sa.testing import PostgresServer

    parser = argparse.ArgumentParser(prog="python -m benchmarks.client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).with_name("results-client.json"))
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--child", choices=("rebuild", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.rows, args.db)
    # No database server is used; the placeholder only fills results.json's environment block.
    server = PostgresServer(url="", origin="not used (client benchmarks only)")
    ctx = BenchContext(server=server, scale=args.scale, trace_python=args.tracemalloc)
    measurements = asyncio.run(run(ctx))
    print_table(measurements, traced=args.tracemalloc)
    write_results(args.output, measurements, ctx, "not used")
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
