"""docs/observability.md cannot drift from the metrics and operations the code produces."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from oversync_sa.metrics.prometheus import PrometheusObserver
from oversync_sa.server.observer import OPERATIONS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def test_every_metric_is_documented() -> None:
    text = PAGE.read_text(encoding="utf-8")
    observer = PrometheusObserver(CollectorRegistry())
    families = {family.name: family.type for family in observer.registry.collect()}
    assert len(families) == 12
    for name, kind in families.items():
        shown = f"{name}_total" if kind == "counter" else name
        assert f"| `{shown}` |" in text, shown


def test_every_operation_label_is_documented() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for operation in OPERATIONS:
        assert f"`{operation}`" in text, operation
