"""Every scenario of go-oversync's mobile_flow simulator (importing this registers them)."""

from __future__ import annotations

from typing import Final

from examples.mobile_flow.context import SCENARIOS, ScenarioSpec
from examples.mobile_flow.scenarios import (  # noqa: F401  (registration side effect)
    complex_batch,
    conflicts,
    multi_device,
    single_user,
    typed_data,
    watch,
)

__all__ = ["ALL", "SCENARIOS", "WATCH_ALL", "resolve"]

#: ``--scenario=all``, in go-oversync's order.
ALL: Final = (
    "fresh-install",
    "normal-usage",
    "reinstall",
    "device-replacement",
    "offline-online",
    "conflicts",
    "user-switch",
    "bundle-fk-atomicity",
    "complex-multi-batch",
    "multi-device-sync",
    "multi-device-complex",
    "files-sync",
    "typed-rows",
)
#: ``--scenario=watch-all``.
WATCH_ALL: Final = (
    "watch-peer-push",
    "watch-server-originated",
    "watch-reconnect-catch-up",
    "watch-default-off",
    "watch-server-unsupported-fallback",
    "watch-idle-cleanup",
    "watch-many-clients-converge",
)


def resolve(name: str) -> list[ScenarioSpec]:
    """The scenarios behind a ``--scenario`` value (``all``, ``watch-all``, ``everything``,
    a name, or a comma-separated list); raises ``KeyError`` naming an unknown one."""
    names: list[str] = []
    for part in (p.strip() for p in name.split(",") if p.strip()):
        if part == "all":
            names += ALL
        elif part == "watch-all":
            names += WATCH_ALL
        elif part == "everything":
            names += ALL + WATCH_ALL
        elif part in SCENARIOS:
            names.append(part)
        else:
            raise KeyError(part)
    return [SCENARIOS[n] for n in dict.fromkeys(names)]
