"""One simulator run: fleet, runtime, connection mode, control API, console, timeline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from protocol.http_edge import SERVER_KEEP_ALIVE_S
from protocol.mqtt import BrokerAddress
from protocol.signing import Verifier, load_public_key
from protocol.timeutil import Clock, SystemClock
from protocol.topics import Topics
from vehicle_sim import console
from vehicle_sim import vehicle as vm
from vehicle_sim.behaviour import Behaviour
from vehicle_sim.control import create_control_app
from vehicle_sim.fleet import Mode, build_fleet
from vehicle_sim.manifest import manifest, write_manifest
from vehicle_sim.runtime import FleetRuntime
from vehicle_sim.scenario import Stage, run_timeline
from vehicle_sim.transport import MultiplexedLink, PerVehicleLink

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    broker: BrokerAddress
    public_key: Path
    vehicles: int = 100
    seed: int = 1
    mix: dict[Mode, float] = field(default_factory=lambda: {Mode.ONLINE: 1.0})
    behaviour: Behaviour = field(default_factory=Behaviour)
    stages: list[Stage] = field(default_factory=list)
    connection_mode: str = "multiplexed"
    shards: int = 4
    fleet_secret: str | None = None
    topic_root: str = "caas/v1"
    manifest_path: Path | None = None
    control_port: int | None = None
    live: bool = True


class Simulator:
    """Start with ``async with Simulator(cfg) as sim``; the fleet is up inside."""

    def __init__(self, cfg: RunConfig, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.topic_root)
        self.specs = build_fleet(cfg.seed, cfg.vehicles, cfg.mix)
        ctx = vm.Context(cfg.seed, Verifier(load_public_key(cfg.public_key)), cfg.behaviour)
        self.runtime = FleetRuntime(self.specs, ctx, self.topics, clock or SystemClock())
        self.link: MultiplexedLink | PerVehicleLink
        if cfg.connection_mode == "per-vehicle":
            if not cfg.fleet_secret:
                raise ValueError(
                    "per-vehicle mode needs the fleet secret (CAAS_FLEET_SECRET or "
                    "--fleet-secret-file)"
                )
            self.link = PerVehicleLink(self.runtime, cfg.broker, self.topics, cfg.fleet_secret)
        else:
            self.link = MultiplexedLink(self.runtime, cfg.broker, self.topics, cfg.shards)
        self.connect_seconds = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._server: uvicorn.Server | None = None

    async def __aenter__(self) -> Simulator:
        if self.cfg.manifest_path is not None:
            data = manifest(self.cfg.seed, self.specs, self.cfg.connection_mode)
            write_manifest(self.cfg.manifest_path, data)
        self.runtime.boot(self.link)
        started = time.monotonic()
        await self.link.start()
        self.connect_seconds = time.monotonic() - started
        log.info(
            "sim.connected vehicles=%d seconds=%.2f mode=%s",
            len(self.specs),
            self.connect_seconds,
            self.cfg.connection_mode,
        )
        if self.cfg.stages:
            self._spawn(run_timeline(self.runtime, self.cfg.stages), "timeline")
        if self.cfg.control_port is not None:
            self._start_control(self.cfg.control_port)
        if self.cfg.live:
            title = f"vehicle_sim seed={self.cfg.seed} ({self.cfg.connection_mode})"
            self._spawn(console.show(self.runtime, self.link.connected_count, title), "console")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            self._server.should_exit = True
        await self.link.stop()
        self.runtime.close()

    def _spawn(self, coro: object, name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))  # type: ignore[arg-type]

    def _start_control(self, port: int) -> None:
        app = create_control_app(self.runtime, self.link.connected_count)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_keep_alive=SERVER_KEEP_ALIVE_S,
        )
        self._server = uvicorn.Server(config)
        self._spawn(self._server.serve(), "control-api")

    async def wait_control_ready(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            # uvicorn exposes readiness only as a flag, so there is nothing to await
            while self._server is None or not self._server.started:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
