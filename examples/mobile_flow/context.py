"""What a scenario works with: configuration, sizes, devices, the verifier, progress and results.

A scenario is an ``async def run(ctx: ScenarioContext)`` registered with :func:`scenario`; it
raises :class:`ScenarioFailure` (via :meth:`ScenarioContext.check`) when an outcome is wrong and
:class:`ScenarioSkipped` when it cannot run here. Devices made through the context are closed
and their files removed afterwards, whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from examples.mobile_flow.device import Device
from examples.mobile_flow.net import TokenSource, Traffic
from examples.mobile_flow.schema import client_config
from examples.mobile_flow.verifier import Verifier
from oversync_sa.client import ClientConfig

__all__ = [
    "SCENARIOS",
    "ProgressSink",
    "ScenarioContext",
    "ScenarioFailure",
    "ScenarioSkipped",
    "ScenarioSpec",
    "SimConfig",
    "Sizes",
    "scenario",
]

_log = logging.getLogger("examples.mobile_flow")


class ScenarioFailure(AssertionError):
    """The scenario ran but an outcome was wrong."""


class ScenarioSkipped(Exception):
    """The scenario cannot run against this client/server; the message says why."""


@dataclass(frozen=True, slots=True)
class Sizes:
    """Data volumes. ``full()`` are go-oversync's numbers; ``quick()`` keeps every effect
    (multi-chunk pushes and snapshots, conflicts spanning chunks) at a fraction of the rows."""

    complex_phone_users: int = 5
    complex_posts_per_user: int = 20
    complex_laptop_users: int = 20
    complex_upload_limit: int = 40
    complex_download_limit: int = 50
    complex_snapshot_rows: int = 25
    watchers: int = 8
    conflict_siblings: int = 6

    @classmethod
    def full(cls) -> Sizes:
        return cls()

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            complex_phone_users=3,
            complex_posts_per_user=6,
            complex_laptop_users=6,
            complex_upload_limit=12,
            complex_download_limit=20,
            complex_snapshot_rows=10,
            watchers=3,
        )


@dataclass(frozen=True, slots=True)
class SimConfig:
    server_url: str
    db_url: str
    workdir: Path
    jwt_secret: str | None = None
    sizes: Sizes = field(default_factory=Sizes)
    keep_files: bool = False
    verbose: bool = False
    #: Appended to every user id so runs never share a scope (and need no cleanup).
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


class ProgressSink(Protocol):
    def step(self, scenario: str, message: str) -> None: ...


@dataclass
class ScenarioContext:
    """One scenario run; see the module docstring."""

    name: str
    config: SimConfig
    tokens: TokenSource
    verifier: Verifier
    progress: ProgressSink
    user_suffix: str = ""
    devices: list[Device] = field(default_factory=list)
    paths: set[Path] = field(default_factory=set)
    traffic: Traffic = field(default_factory=Traffic)
    notes: list[str] = field(default_factory=list)

    @property
    def sizes(self) -> Sizes:
        return self.config.sizes

    def user(self, base: str) -> str:
        """A user id unique to this run (go-oversync uses fixed ids plus ``--cleanup``)."""
        return f"{base}-{self.config.run_id}{self.user_suffix}"

    def step(self, message: str) -> None:
        self.progress.step(self.name, message)

    def debug(self, message: str) -> None:
        if self.config.verbose:
            self.progress.step(self.name, message)
        _log.debug("[%s] %s", self.name, message)

    def note(self, message: str) -> None:
        """A fact worth showing in the summary (e.g. a Go deviation or a measured number)."""
        self.notes.append(message)

    @staticmethod
    def check(condition: object, message: str) -> None:
        if not condition:
            raise ScenarioFailure(message)

    @staticmethod
    def equal(actual: object, expected: object, what: str) -> None:
        if actual != expected:
            raise ScenarioFailure(f"{what}: expected {expected!r}, got {actual!r}")

    def _path(self, label: str) -> Path:
        safe = "".join(c if c.isalnum() else "_" for c in f"{self.name}_{label}")
        return self.config.workdir / f"mobile_flow_{safe}_{uuid.uuid4().hex[:10]}.db"

    async def device(
        self,
        label: str,
        *,
        config: ClientConfig | None = None,
        advertise_watch: bool | None = None,
        path: Path | None = None,
    ) -> Device:
        """A new (launched) device; ``path`` reopens an existing database file."""
        device = await Device.create(
            label,
            path or self._path(label),
            server_url=self.config.server_url,
            tokens=self.tokens,
            config=config or client_config(),
            advertise_watch=advertise_watch,
            log=self.debug,
        )
        self.devices.append(device)
        self.paths.add(device.path)
        await device.launch()
        return device

    async def restart(self, device: Device, config: ClientConfig | None = None) -> Device:
        """Kill the app and start it again over the same file, session kept; loops stopped."""
        user = device.session.user_id
        await self._retire(device)
        created = await Device.create(
            device.name,
            device.path,
            server_url=self.config.server_url,
            tokens=self.tokens,
            config=config or device.client.runtime.config,
            log=self.debug,
        )
        self.devices.append(created)
        created.session.user_id = user  # the persisted sign-in survives the restart
        await created.launch()
        await created.stop_sync()
        return created

    async def _retire(self, device: Device) -> None:
        self.traffic.add(device.network.traffic)
        await device.close()
        self.devices.remove(device)

    async def close_devices(self) -> None:
        for device in list(self.devices):
            with contextlib.suppress(Exception):
                await self._retire(device)
        if not self.config.keep_files:
            for path in self.paths:
                _remove_database(path)


def _remove_database(path: Path) -> None:
    """A SQLite file and its WAL companions (quick local unlinks, fine inside async code)."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


ScenarioFn = Callable[[ScenarioContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    name: str
    title: str
    description: str
    run: ScenarioFn
    watch: bool = False


#: Every scenario, in go-oversync's menu order (filled by the ``scenarios`` package).
SCENARIOS: dict[str, ScenarioSpec] = {}


def scenario(
    name: str, title: str, description: str, *, watch: bool = False
) -> Callable[[ScenarioFn], ScenarioFn]:
    def register(fn: ScenarioFn) -> ScenarioFn:
        SCENARIOS[name] = ScenarioSpec(name, title, description, fn, watch)
        return fn

    return register
