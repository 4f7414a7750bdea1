"""``python -m vehicle_sim``: run a simulated fleet (docs/spec.md §7). See --help."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import uvloop

from protocol.errors import KeyFileError, MqttError, ProtocolError
from protocol.fdlimit import raise_fd_limit
from protocol.heap import freeze_start_up, rare_full_collections
from protocol.logsetup import configure_logging
from protocol.mqtt import BrokerAddress
from protocol.probes import wait_for_broker
from protocol.settings import ConfigError, service_url
from protocol.signing import load_public_key
from protocol.startup import (
    DEFAULT_STARTUP_WAIT_S,
    EXIT_CODES_EPILOG,
    DefaultsHelpFormatter,
    ExitCode,
    refuse,
)
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
CAAS_PUBLIC_KEY, CAAS_FLEET_SECRET, CAAS_TOPIC_ROOT; CAAS_STARTUP_WAIT_S (default
15) bounds the wait for the broker at start. Pass secrets through the environment (or
--fleet-secret-file), not on the command line: every user of the machine can read a
process's arguments (ps, /proc/PID/cmdline). With the local stack (`python -m
launcher up`): python -m launcher run vehicle_sim -- run --vehicles 1000 ...

"""
BROKER_OPTION = "--broker (CAAS_FLEET_MQTT_URL)"
KEY_OPTION = "--public-key (CAAS_PUBLIC_KEY)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vehicle_sim",
        description="Deterministic fleet of simulated vehicles answering over MQTT 5.",
        epilog=EPILOG + textwrap.fill(EXIT_CODES_EPILOG, 88),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="connect the fleet and answer commands until interrupted",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=DefaultsHelpFormatter,
    )
    _fleet_args(run)
    env = os.environ.get
    run.add_argument(
        "--broker",
        default=env("CAAS_FLEET_MQTT_URL") or env("CAAS_MQTT_URL"),
        help="mqtt://user:pass@host:port (fleet identity in multiplexed mode; "
        "the vehicle listener in per-vehicle mode); default: $CAAS_FLEET_MQTT_URL, "
        "else $CAAS_MQTT_URL (a password here is visible in ps: prefer the variable)",
    )
    run.add_argument(
        "--public-key",
        type=Path,
        default=env("CAAS_PUBLIC_KEY"),
        help="gateway Ed25519 public key (PEM) that commands must verify against "
        "(default: $CAAS_PUBLIC_KEY)",
    )
    run.add_argument("--manifest", type=Path, help="write the fleet manifest (JSON) here")
    run.add_argument(
        "--connection-mode",
        choices=["multiplexed", "per-vehicle"],
        default="multiplexed",
        help="a few shared connections, or one per vehicle (its own login)",
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
        help="per-vehicle mode: secret the vehicle passwords derive from (default: "
        "$CAAS_FLEET_SECRET; deprecated on the command line, where ps shows it: set "
        "CAAS_FLEET_SECRET or --fleet-secret-file)",
    )
    run.add_argument(
        "--fleet-secret-file",
        type=Path,
        help="per-vehicle mode: read the fleet secret from this file (mode 0600)",
    )
    run.add_argument(
        "--topic-root",
        default=env("CAAS_TOPIC_ROOT", "caas/v1"),
        help="topic prefix shared with the gateway (default: $CAAS_TOPIC_ROOT, else caas/v1)",
    )
    run.add_argument(
        "--control-port", type=int, help="serve the control API and /metrics on 127.0.0.1:PORT"
    )
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument(
        "--no-live", action="store_true", help="plain progress lines instead of the live table"
    )
    run.add_argument("--log-level", default="WARNING", help="log level")
    show = sub.add_parser(
        "manifest",
        help="print the fleet manifest without connecting",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=DefaultsHelpFormatter,
    )
    _fleet_args(show)
    return parser


def _fleet_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vehicles", type=int, help="fleet size (default: 100, or the scenario's)")
    parser.add_argument("--seed", type=int, help="fleet seed (default: 1, or the scenario's)")
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
    broker = BrokerAddress.from_url(
        service_url(BROKER_OPTION, args.broker, ("mqtt", "tcp"), "mqtt://user:password@host:port")
    )
    if not args.public_key:
        raise ConfigError(KEY_OPTION, "not set (the gateway's Ed25519 public key, PEM)")
    try:
        load_public_key(args.public_key)
    except KeyFileError as exc:
        problem = f"{exc.problem}: {exc.path}; point it at the gateway's Ed25519 public key"
        raise ConfigError(KEY_OPTION, problem) from None
    # multiplexed: the URL's credentials are the fleet's, checked here; per-vehicle:
    # each vehicle logs in with its own, so only the listener is waited for
    log_in = args.connection_mode == "multiplexed"
    await wait_for_broker(broker, BROKER_OPTION, startup_wait_s(), log_in)
    cfg = RunConfig(
        broker=broker,
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
        freeze_start_up()  # the fleet: no full collection walks it while it answers
        rare_full_collections()  # nor, often, the vehicle states that replace it
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
    except (ProtocolError, ValueError) as exc:  # one line with its exit code
        return refuse("vehicle_sim", exc)
    except (SimulatorError, MqttError) as exc:  # a scenario, or the fleet's own connects
        print(f"vehicle_sim: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG)


def startup_wait_s() -> float:
    """CAAS_STARTUP_WAIT_S (the services' variable; this CLI has no settings class)."""
    text = os.environ.get("CAAS_STARTUP_WAIT_S") or str(DEFAULT_STARTUP_WAIT_S)
    try:
        wait_s = float(text)
    except ValueError:
        wait_s = -1.0
    if not wait_s > 0:
        raise ConfigError("CAAS_STARTUP_WAIT_S", "expected a number of seconds above 0")
    return wait_s


if __name__ == "__main__":
    sys.exit(main())
