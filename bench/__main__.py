"""``python -m bench``: benchmarks. See --help."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import fleet_scale, micro


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "micro":
        return micro.main()
    return fleet_scale.run(args.vehicles, args.connection_mode, args.shards, args.window, args.json)


if __name__ == "__main__":
    sys.exit(main())
