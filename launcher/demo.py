"""The main job for now (issue 2): broker + Redis + a simulated fleet, with traffic.

Starts the local stack, a mixed fleet, and a gateway-like probe that keeps sending
signed status and activate commands so the live summary shows the fleet answering.
Later issues replace the probe with the real gateway and backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

from bench.probe import FleetProbe
from launcher.stack import LocalStack, StackOptions
from protocol.models import CommandType
from protocol.signing import Signer, load_private_key
from protocol.topics import Topics
from vehicle_sim.app import RunConfig, Simulator
from vehicle_sim.behaviour import Behaviour
from vehicle_sim.fleet import ALL_FEATURES, parse_mix

DEMO_MIX = (
    "online=0.6,busy=0.1,driving=0.1,offline=0.05,nack=0.03,timeout=0.04,conflict=0.03,flaky=0.05"
)


@dataclass
class DemoOptions:
    run_dir: Path
    vehicles: int = 1000
    seed: int = 7
    duration_s: float | None = None
    rate_per_s: float = 200.0
    live: bool = True


async def drive_traffic(probe: FleetProbe, vins: list[str], rate_per_s: float) -> None:
    """Round-robin status and activate commands over the fleet at ``rate_per_s``."""
    features = itertools.cycle(ALL_FEATURES)
    interval = 1.0 / rate_per_s
    next_at = time.monotonic()
    for n, vin in enumerate(itertools.cycle(vins)):
        if n % 4 == 0:
            feature = next(features)
            cmd = probe.command(
                vin, CommandType.ACTIVATE, feature=feature, activation_id=f"demo-{n}"
            )
        else:
            cmd = probe.command(vin, CommandType.STATUS)
        probe.send(cmd)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def run_demo(opts: DemoOptions) -> int:
    with LocalStack(StackOptions(run_dir=opts.run_dir)) as stack:
        env = stack.env()
        print(
            f"demo: broker {env['CAAS_VEHICLE_MQTT_URL']} (vehicles), "
            f"redis on port {stack.redis.settings.port if stack.redis else '-'}; "
            f"run folder {stack.run_dir}",
            flush=True,
        )
        cfg = RunConfig(
            broker=stack.broker.fleet_address(),
            public_key=stack.public_key_path,
            vehicles=opts.vehicles,
            seed=opts.seed,
            mix=parse_mix(DEMO_MIX),
            behaviour=Behaviour(busy_s=(5, 20), trip_s=(5, 30)),
            manifest_path=stack.run_dir / "manifest.json",
            live=opts.live,
        )
        signer = Signer(load_private_key(stack.private_key_path))
        async with (
            Simulator(cfg) as sim,
            FleetProbe(
                stack.broker.gateway_address(), signer, Topics(), client_id="demo-probe"
            ) as probe,
        ):
            print(
                f"demo: {opts.vehicles} vehicles up in {sim.connect_seconds:.1f}s; "
                "sending status/activate traffic (Ctrl-C to stop)",
                flush=True,
            )
            traffic = asyncio.create_task(
                drive_traffic(probe, [s.vin for s in sim.specs], opts.rate_per_s)
            )
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.Event().wait(), opts.duration_s)
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
            s = probe.stats
            print(
                f"demo: sent {s.sent} commands, {s.answered} answered, "
                f"p50 {s.percentile_ms(50):.1f} ms, p99 {s.percentile_ms(99):.1f} ms",
                flush=True,
            )
            return 0 if s.answered > 0 else 1
