"""``python -m vehicle_sim``: run a simulated fleet (SPEC §7). See --help."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlparse

import uvloop

from protocol.errors import KeyFileError, MqttError
from protocol.fdlimit import raise_fd_limit
from protocol.logsetup import configure_logging
from protocol.mqtt import BrokerAddress
from vehicle_sim.app import RunConfig, Simulator
from vehicle_sim.errors import SimulatorError
from vehicle_sim.fleet import Mode, build_fleet, parse_mix, validate_mix
from vehicle_sim.manifest import manifest
from vehicle_sim.scenario import Scenario, load_scenario

EPILOG = """
examples:
  CAAS_FLEET_MQTT_URL=mqtt://fleet:PASS@127.0.0.1:1884 python -m vehicle_sim run \\
      --vehicles 1000 --seed 7 --mix online=0.7,busy=0.1,driving=0.1,flaky=0.1 --public-key gw.pem
  CAAS_FLEET_SECRET=... python -m vehicle_sim run --connection-mode per-vehicle \\
      --broker mqtt://127.0.0.1:1883 --vehicles 500 --public-key gw.pem
  python -m vehicle_sim manifest --vehicles 10 --seed 7

Defaults come from the environment when set: CAAS_FLEET_MQTT_URL (or CAAS_MQTT_URL),
CAAS_PUBLIC_KEY, CAAS_FLEET_SECRET, CAAS_TOPIC_ROOT. Pass secrets that way (or
--fleet-secret-file), not on the command line: every user of the machine can read a
process's arguments (ps, /proc/PID/cmdline). With the local stack (`python -m
launcher up`): python -m launcher run vehicle_sim -- run --vehicles 1000 ...
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vehicle_sim",
        description="Deterministic fleet of simulated vehicles answering over MQTT 5.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="connect the fleet and answer commands until interrupted",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _fleet_args(run)
    env = os.environ.get
    run.add_argument(
        "--broker",
        default=env("CAAS_FLEET_MQTT_URL") or env("CAAS_MQTT_URL"),
        help="mqtt://user:pass@host:port (fleet identity in multiplexed mode; "
        "the vehicle listener in per-vehicle mode). A password here is visible in ps: "
        "prefer CAAS_FLEET_MQTT_URL",
    )
    run.add_argument(
        "--public-key",
        type=Path,
        default=env("CAAS_PUBLIC_KEY"),
        help="gateway Ed25519 public key (PEM) that commands must verify against",
    )
    run.add_argument("--manifest", type=Path, help="write the fleet manifest (JSON) here")
    run.add_argument(
        "--connection-mode", choices=["multiplexed", "per-vehicle"], default="multiplexed"
    )
    run.add_argument(
        "--shards",
        type=int,
        default=4,
        help="connections in multiplexed mode, each serving a shard of VINs",
    )
    run.add_argument(
        "--fleet-secret",
        default=env("CAAS_FLEET_SECRET"),
        help="per-vehicle mode: secret the vehicle passwords derive from (deprecated on "
        "the command line, where ps shows it: set CAAS_FLEET_SECRET or --fleet-secret-file)",
    )
    run.add_argument(
        "--fleet-secret-file",
        type=Path,
        help="per-vehicle mode: read the fleet secret from this file (mode 0600)",
    )
    run.add_argument("--topic-root", default=env("CAAS_TOPIC_ROOT", "caas/v1"))
    run.add_argument(
        "--control-port", type=int, help="serve the control API and /metrics on 127.0.0.1:PORT"
    )
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument(
        "--no-live", action="store_true", help="plain progress lines instead of the live table"
    )
    run.add_argument("--log-level", default="WARNING")
    show = sub.add_parser("manifest", help="print the fleet manifest without connecting")
    _fleet_args(show)
    return parser


def _fleet_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vehicles", type=int, help="fleet size (default 100, or the scenario's)")
    parser.add_argument("--seed", type=int, help="fleet seed (default 1, or the scenario's)")
    parser.add_argument("--scenario", type=Path, help="YAML scenario file (docs/simulator.md)")
    parser.add_argument("--mix", help="mode weights, e.g. online=0.7,busy=0.1,timeout=0.2")


def resolve(args: argparse.Namespace) -> tuple[Scenario, int, int, dict[Mode, float]]:
    scenario = load_scenario(args.scenario) if args.scenario else Scenario()
    vehicles = args.vehicles or scenario.vehicles or 100
    seed = args.seed if args.seed is not None else (scenario.seed or 1)
    mix = parse_mix(args.mix) if args.mix else validate_mix(dict(scenario.mix), "mix")
    return scenario, vehicles, seed, mix


def secrets_on_command_line(argv: list[str]) -> list[str]:
    """The options of ``argv`` that carry a secret (a broker URL with a password, the
    fleet secret): each one is readable by every user in ps."""
    flagged = []
    for index, word in enumerate(argv):
        name, _, inline = word.partition("=")
        value = inline or (argv[index + 1] if index + 1 < len(argv) else "")
        if name == "--fleet-secret" or (name == "--broker" and urlparse(value).password):
            flagged.append(name)
    return flagged


def fleet_secret(args: argparse.Namespace) -> str | None:
    """--fleet-secret-file's first line, else --fleet-secret / CAAS_FLEET_SECRET."""
    if args.fleet_secret_file:
        try:
            return str(args.fleet_secret_file.read_text().strip())
        except OSError as exc:
            raise SimulatorError(f"--fleet-secret-file: {exc.strerror}: {exc.filename}") from None
    return str(args.fleet_secret) if args.fleet_secret else None


async def run(args: argparse.Namespace) -> int:
    scenario, vehicles, seed, mix = resolve(args)
    if not args.broker:
        raise SimulatorError("--broker is required (or set CAAS_FLEET_MQTT_URL)")
    if not args.public_key:
        raise SimulatorError("--public-key is required (or set CAAS_PUBLIC_KEY)")
    cfg = RunConfig(
        broker=BrokerAddress.from_url(args.broker),
        public_key=args.public_key,
        vehicles=vehicles,
        seed=seed,
        mix=mix,
        behaviour=scenario.timing.behaviour(),
        stages=list(scenario.stages),
        connection_mode=args.connection_mode,
        shards=args.shards,
        fleet_secret=fleet_secret(args),
        topic_root=args.topic_root,
        manifest_path=args.manifest,
        control_port=args.control_port,
        live=not args.no_live,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Simulator(cfg) as sim:
        print(
            f"vehicle_sim: {vehicles} vehicles connected in {sim.connect_seconds:.1f}s "
            f"({args.connection_mode}); Ctrl-C to stop",
            flush=True,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for option in secrets_on_command_line(sys.argv[1:] if argv is None else argv):
        print(
            f"vehicle_sim: warning: {option} puts a secret on the command line, where ps "
            "shows it to every user (deprecated): use CAAS_FLEET_MQTT_URL / "
            "CAAS_FLEET_SECRET or --fleet-secret-file",
            file=sys.stderr,
        )
    configure_logging(getattr(args, "log_level", "WARNING"))
    try:
        if args.command == "manifest":
            _, vehicles, seed, mix = resolve(args)
            print(json.dumps(manifest(seed, build_fleet(seed, vehicles, mix), "n/a"), indent=1))
            return 0
        raise_fd_limit()
        return uvloop.run(run(args))
    except (SimulatorError, KeyFileError, MqttError, ValueError) as exc:
        print(f"vehicle_sim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
