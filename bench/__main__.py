"""``python -m bench``: benchmarks. See --help."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench import (
    activations,
    broker_stalls,
    capacity,
    faults,
    fleet_scale,
    micro,
    money_faults,
    purchases,
)


def _windows(text: str) -> list[int]:
    """``--window 64`` or ``--window 16,64,256``."""
    try:
        windows = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers, e.g. 16,64,256") from None
    if not windows or min(windows) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each window must be at least 1")
    return windows


def _rates(text: str) -> list[float]:
    """``--rates 1000,2000,4000``: messages per second, each offered for --step-s."""
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers, e.g. 1000,2000") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: each rate must be above 0")
    return rates


def _one_of(choices: Iterable[str]) -> Callable[[str], str]:
    """An argparse type that accepts one of ``choices`` and names them when it refuses."""
    allowed = tuple(choices)

    def check(name: str) -> str:
        if name not in allowed:
            raise argparse.ArgumentTypeError(f"{name!r}: one of {', '.join(allowed)}")
        return name

    return check


def _documented(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_: str, module: Any
) -> argparse.ArgumentParser:
    """A subcommand whose --help shows its module's docstring as written."""
    return sub.add_parser(
        name,
        help=help_,
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True)
    scale = sub.add_parser(
        "fleet-scale",
        help="how many vehicles one simulator process serves (connect time, RSS, answers/s)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    scale.add_argument("--vehicles", type=int, default=100_000)
    scale.add_argument(
        "--connection-mode", choices=["multiplexed", "per-vehicle"], default="multiplexed"
    )
    scale.add_argument("--shards", type=int, default=8, help="multiplexed connections")
    scale.add_argument(
        "--window", type=int, default=2000, help="status commands outstanding at once"
    )
    scale.add_argument("--json", type=Path, help="also write the result here")
    sub.add_parser("micro", help="message-path micro-benchmarks against their alternatives")
    act = sub.add_parser(
        "activations",
        help="activations/s and latency through the gateway API vs the raw MQTT echo",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    act.add_argument(
        "--vehicles",
        type=int,
        default=30_000,
        help="fleet size: every activation takes a vehicle of its own",
    )
    act.add_argument("--workers", type=int, default=2, help="gateway processes")
    act.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    act.add_argument(
        "--window",
        type=_windows,
        default=[16, 64, 256],
        help="activations kept outstanding in (b); several (comma-separated): each is probed "
        f"for {activations.PROBE_S:g} s and the fastest is sustained",
    )
    act.add_argument("--json", type=Path, help="also write the result here")
    fault = _documented(
        sub, "faults",
        "faults at the vehicle boundary: hostile cars, junk, broker kill, frozen worker", faults,
    )  # fmt: skip
    fault.add_argument(
        "scenario",
        nargs="*",
        type=_one_of(faults.SCENARIOS),
        help=f"{', '.join(faults.SCENARIOS)} (default: all)",
    )
    fault.add_argument(
        "--activations", type=int, default=1500, help="fleet size and activations (default 1500)"
    )
    fault.add_argument(
        "--freeze-s", type=float, default=25.0, help="SIGSTOP length in freeze (default 25)"
    )
    fault.add_argument("--json", type=Path, help="also write the report here")
    money = _documented(
        sub, "money-faults",
        "faults at the money boundary: backend / provider SIGKILLed mid-flight", money_faults,
    )  # fmt: skip
    money.add_argument(
        "scenario",
        nargs="*",
        type=_one_of(money_faults.SCENARIOS),
        help=f"{', '.join(money_faults.SCENARIOS)} (default: all)",
    )
    money.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    money.add_argument(
        "--vehicles", type=int, default=1000, help="one purchase per vehicle (default 1000)"
    )
    money.add_argument(
        "--in-flight", type=int, default=300, help="kill once this many are in flight (300)"
    )
    money.add_argument(
        "--concurrency", type=int, default=100, help="purchase requests at a time (default 100)"
    )
    money.add_argument("--json", type=Path, help="also write the report here")
    buy = sub.add_parser(
        "purchases",
        help="the backend purchase path to CHARGED (whole platform, all-online fleet)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    buy.add_argument("--vehicles", type=int, default=2000, help="one purchase per vehicle")
    buy.add_argument("--concurrency", type=int, default=50, help="purchase requests at a time")
    buy.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    buy.add_argument(
        "--backends", type=int, default=1, help="backend processes on the one database"
    )
    buy.add_argument("--json", type=Path, help="also write the result here")
    cap = _documented(
        sub, "capacity",
        "Redis memory per twin and per activation, inbound messages/s one worker absorbs, "
        "reconnect storm (the capacity model's measurements)", capacity,
    )  # fmt: skip
    cap.add_argument(
        "--vehicles", type=int, default=30_000, help="fleet size, twins and storm (default 30000)"
    )
    cap.add_argument(
        "--activations",
        type=int,
        default=10_000,
        help="activations to SUCCEEDED for the memory per activation (default 10000); the "
        "other vehicles are the flood's",
    )
    cap.add_argument(
        "--rates",
        type=_rates,
        default=[1000.0, 2000.0, 4000.0, 8000.0],
        help="state + presence messages/s offered, one step each (default 1000,2000,4000,8000)",
    )
    cap.add_argument("--step-s", type=float, default=6.0, help="seconds per rate (default 6)")
    cap.add_argument("--json", type=Path, help="also write the report here")
    stalls = _documented(
        sub, "broker-stalls",
        "round trips through a broker holding a fleet's retained messages, with the old "
        "periodic autosave and with the project's setting", broker_stalls,
    )  # fmt: skip
    stalls.add_argument(
        "--retained", type=int, default=60_000, help="retained messages (default 60000)"
    )
    stalls.add_argument(
        "--seconds", type=float, default=65.0, help="round trips per setting (default 65)"
    )
    stalls.add_argument(
        "--baseline-autosave", type=int, default=30,
        help="autosave_interval of the baseline broker (default 30, the old setting)",
    )  # fmt: skip
    stalls.add_argument("--json", type=Path, help="also write the report here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "micro":
        return micro.main()
    if args.command == "faults":
        return faults.run(args.scenario, args.activations, args.freeze_s, args.json)
    if args.command == "money-faults":
        return money_faults.run(
            args.scenario,
            args.database,
            args.vehicles,
            args.in_flight,
            args.concurrency,
            args.json,
        )
    if args.command == "purchases":
        return purchases.run(
            args.vehicles, args.concurrency, args.database, args.backends, args.json
        )
    if args.command == "capacity":
        return capacity.run(args.vehicles, args.activations, args.rates, args.step_s, args.json)
    if args.command == "broker-stalls":
        return broker_stalls.run(args.retained, args.seconds, args.baseline_autosave, args.json)
    if args.command == "activations":
        return activations.run(args.vehicles, args.workers, args.duration, args.window, args.json)
    return fleet_scale.run(args.vehicles, args.connection_mode, args.shards, args.window, args.json)


if __name__ == "__main__":
    sys.exit(main())
