"""prometheus-client is an optional extra: nothing but oversync_sa.metrics.prometheus needs it."""

from __future__ import annotations

import subprocess
import sys

# Makes ``import prometheus_client`` fail in the child, as if the extra were not installed.
_WITHOUT_PROMETHEUS = "import sys; sys.modules['prometheus_client'] = None\n"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_server_core_and_adapters_do_not_import_prometheus() -> None:
    out = _run(
        "import sys\n"
        "import oversync_sa, oversync_sa.server, oversync_sa.litestar, oversync_sa.metrics\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_server_works_without_prometheus_installed() -> None:
    out = _run(
        _WITHOUT_PROMETHEUS
        + "from oversync_sa.server import ServiceConfig, SyncService\n"
        "from oversync_sa.server.observer import SyncObserver\n"
        "from oversync_sa.litestar import OversyncPlugin, metrics_route\n"
        "config = ServiceConfig(observer=SyncObserver())\n"
        "print(type(config.observer).__name__)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SyncObserver"


def test_prometheus_adapter_names_the_extra_to_install() -> None:
    for statement in (
        "import oversync_sa.metrics.prometheus",
        "from oversync_sa.metrics import PrometheusObserver",
        "from oversync_sa.litestar import metrics_route; metrics_route()",
    ):
        out = _run(_WITHOUT_PROMETHEUS + statement)
        assert out.returncode == 1, statement
        assert "ImportError" in out.stderr, statement
        assert "pip install 'oversync-sa[metrics]'" in out.stderr, statement
