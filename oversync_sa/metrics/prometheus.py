"""Prometheus metrics for the sync server: a :class:`SyncObserver` backed by ``prometheus-client``.

Wire it in with ``ServiceConfig(observer=obs, stage_metrics=obs.stage_recorder)`` and expose
``obs.registry`` (e.g. :func:`oversync_sa.litestar.metrics.metrics_route`). Every label comes
from a bounded set - operation and stage names, wire error codes, registered table names - and
per-user retention lag is aggregated into fixed buckets, so the series count does not grow with
the number of users. See ``docs/observability.md`` for the metric list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.metrics_core import GaugeHistogramMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "oversync_sa.metrics.prometheus needs prometheus-client: "
        "pip install 'oversync-sa[metrics]'"
    ) from exc

from oversync_sa.server.observer import (
    OPERATIONS,
    OUTCOME_OK,
    Operation,
    RetentionLag,
    SyncObserver,
)
from oversync_sa.server.stages import StageTiming

__all__ = ["DEFAULT_LATENCY_BUCKETS", "PrometheusObserver", "exposition"]

#: Seconds. Pulls and chunks are usually milliseconds; large commits and snapshot creation of a
#: big scope can take tens of seconds.
DEFAULT_LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


class _RetentionLagCollector(Collector):
    """Exposes the last :class:`RetentionLag` as a gauge histogram (a distribution *now*).

    A plain histogram would accumulate every refresh; a gauge histogram is replaced each time,
    which is what "how far behind are the users at the moment" means.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lag: RetentionLag | None = None

    def update(self, lag: RetentionLag) -> None:
        self._lag = lag

    def _family(self) -> GaugeHistogramMetricFamily:
        return GaugeHistogramMetricFamily(
            self._name, "Users by bundles retained above their retained floor (head - floor)."
        )

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        lag = self._lag
        if lag is None:
            return [family]
        buckets = [
            (str(float(bound)), float(count))
            for bound, count in zip(lag.bucket_bounds, lag.bucket_counts, strict=True)
        ]
        buckets.append(("+Inf", float(lag.users)))
        family.add_metric([], buckets, float(lag.total_lag))
        return [family]


class PrometheusObserver(SyncObserver):
    """Records the service's events as Prometheus metrics in ``registry``.

    ``registry`` defaults to ``prometheus_client.REGISTRY``; give each observer its own
    :class:`~prometheus_client.CollectorRegistry` when several services (or tests) share a
    process, since one registry refuses the same metric names twice. ``namespace`` prefixes
    every metric name.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        namespace: str = "oversync",
        *,
        latency_buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
    ) -> None:
        self.registry: CollectorRegistry = REGISTRY if registry is None else registry
        ns, reg = namespace, self.registry
        buckets = tuple(latency_buckets)
        self.operation_duration = Histogram(
            "operation_duration_seconds",
            "Duration of sync operations (push create/chunk/commit, pull, snapshots ...).",
            ["operation"], namespace=ns, registry=reg, buckets=buckets,
        )
        self.operations = Counter(
            "operations",
            "Finished sync operations by outcome (ok or the wire error code).",
            ["operation", "outcome"], namespace=ns, registry=reg,
        )
        self.bundles_committed = Counter(
            "push_bundles_committed", "Bundles committed by push sessions.",
            namespace=ns, registry=reg,
        )
        self.rows_committed = Counter(
            "push_rows_committed", "Rows in bundles committed by push sessions.",
            namespace=ns, registry=reg,
        )
        self.conflicts = Counter(
            "push_conflicts", "Push commits rejected with push_conflict, by table.",
            ["table"], namespace=ns, registry=reg,
        )
        self.history_pruned_responses = Counter(
            "history_pruned", "history_pruned answers, by operation.",
            ["operation"], namespace=ns, registry=reg,
        )
        self.watch_subscribers = Gauge(
            "watch_subscribers", "Open bundle-change watch subscriptions in this process.",
            namespace=ns, registry=reg,
        )
        self.retention_lag_max = Gauge(
            "retained_floor_lag_max_bundles",
            "Largest head - retained floor over all users (last measurement).",
            namespace=ns, registry=reg,
        )
        self.retention_backlog_users = Gauge(
            "retention_backlog_users",
            "Users retaining more bundles than retained_bundles_per_user (last measurement).",
            namespace=ns, registry=reg,
        )
        self.stage_duration = Histogram(
            "stage_duration_seconds",
            "Duration of operation stages (SERVER.md 7.5 stage timings).",
            ["operation", "stage"], namespace=ns, registry=reg, buckets=buckets,
        )
        self.stage_errors = Counter(
            "stage_errors", "Operation stages that failed.",
            ["operation", "stage"], namespace=ns, registry=reg,
        )
        self._lag = _RetentionLagCollector(f"{namespace}_retained_floor_lag_bundles")
        self.registry.register(self._lag)
        # Series that exist from the start read 0 instead of "no data" on dashboards.
        for operation in OPERATIONS:
            self.operation_duration.labels(operation)
            self.operations.labels(operation, OUTCOME_OK)

    # -- SyncObserver ----------------------------------------------------------------------

    def operation_finished(self, operation: Operation, duration: float, outcome: str) -> None:
        self.operation_duration.labels(operation).observe(duration)
        self.operations.labels(operation, outcome).inc()

    def push_committed(self, user_id: str, rows: int, bundles: int, duration: float) -> None:
        # user_id is deliberately not a label: one series per user would be unbounded.
        self.bundles_committed.inc(bundles)
        self.rows_committed.inc(rows)

    def push_conflict(self, table: str) -> None:
        self.conflicts.labels(table).inc()

    def history_pruned(self, operation: Operation) -> None:
        self.history_pruned_responses.labels(operation).inc()

    def watch_subscribers_changed(self, count: int) -> None:
        self.watch_subscribers.set(count)

    def retention_lag_measured(self, lag: RetentionLag) -> None:
        self._lag.update(lag)
        self.retention_lag_max.set(lag.max_lag)
        self.retention_backlog_users.set(lag.over_window)

    # -- stage timings ---------------------------------------------------------------------

    def stage_recorder(self, timing: StageTiming) -> None:
        """A ``ServiceConfig.stage_metrics`` recorder: stage durations by operation and stage."""
        self.stage_duration.labels(timing.operation, timing.stage).observe(timing.duration)
        if timing.error:
            self.stage_errors.labels(timing.operation, timing.stage).inc()


def exposition(registry: CollectorRegistry | None = None, accept: str = "") -> tuple[bytes, str]:
    """``registry`` (default ``prometheus_client.REGISTRY``) rendered for a scrape.

    ``accept`` is the scraper's ``Accept`` header: OpenMetrics when it asks for it, else the
    classic text format 0.0.4 that every Prometheus understands. Returns
    ``(body, content_type)`` for any HTTP framework's response.
    """
    encode, content_type = choose_encoder(accept)
    return encode(REGISTRY if registry is None else registry), content_type
