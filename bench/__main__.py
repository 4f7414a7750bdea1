"""``python -m bench``: benchmarks. See --help."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from bench import activations, faults, fleet_scale, micro, money_faults, purchases


def _windows(text: str) -> list[int]:
    """``--window 64`` or ``--window 16,64,256``."""
    try:
        windows = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers, e.g. 16,64,256") from None
    if not windows or min(windows) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each window must be at least 1")
    return windows


def _one_of(choices: Iterable[str]) -> Callable[[str], str]:
    """An argparse type that accepts one of ``choices`` and names them when it refuses."""
    allowed = tuple(choices)

    def check(name: str) -> str:
        if name not in allowed:
            raise argparse.ArgumentTypeError(f"{name!r}: one of {', '.join(allowed)}")
        return name

    return check


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
    fault = sub.add_parser(
        "faults",
        help="faults at the vehicle boundary: hostile cars, junk, broker kill, frozen worker",
        description=faults.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    money = sub.add_parser(
        "money-faults",
        help="faults at the money boundary: backend / provider SIGKILLed mid-flight",
        description=money_faults.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    buy.add_argument("--json", type=Path, help="also write the result here")
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
        return purchases.run(args.vehicles, args.concurrency, args.database, args.json)
    if args.command == "activations":
        return activations.run(args.vehicles, args.workers, args.duration, args.window, args.json)
    return fleet_scale.run(args.vehicles, args.connection_mode, args.shards, args.window, args.json)


if __name__ == "__main__":
    sys.exit(main())
