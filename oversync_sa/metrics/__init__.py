"""Optional metrics adapters over :mod:`oversync_sa.server.observer`.

``pip install 'oversync-sa[metrics]'`` for
:class:`~oversync_sa.metrics.prometheus.PrometheusObserver`. Nothing here is imported by
``oversync_sa`` or the server core, and the names below resolve on first use, so importing this
package without ``prometheus-client`` installed is fine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oversync_sa.metrics.prometheus import PrometheusObserver

__all__ = ["PrometheusObserver"]


def __getattr__(name: str) -> Any:
    if name == "PrometheusObserver":
        from oversync_sa.metrics.prometheus import PrometheusObserver

        return PrometheusObserver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
