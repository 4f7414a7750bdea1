"""Command-line entry points: serve (default), migrate, seed, check-invariants, reconcile."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from backend.audit import money as invariants
from backend.config import BackendSettings
from backend.services.seed import FleetEntry, load_fleet_manifest, seed_demo
from backend.store.db import make_engine, make_sessions, migrate
from protocol.logsetup import configure_logging
from protocol.settings import ConfigError, problem_line
from protocol.timeutil import SystemClock


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m backend",
        description="CaaS business backend: HTTP API + outbox relay + event consumer "
        "(configured by CAAS_* environment variables, SPEC §6).",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="listen port (default 8080)")
    p.add_argument("--log-level", default="info", help="debug | info | warning")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the API and the background loops (the default)")
    sub.add_parser("migrate", help="upgrade the database schema to the latest revision")
    seed = sub.add_parser(
        "seed",
        help="create demo customers owning the vehicles of a fleet manifest; prints their tokens",
        description="Create demo customers owning the vehicles of the simulator's fleet "
        "manifest (python -m vehicle_sim run --manifest PATH, or python -m vehicle_sim "
        "manifest > PATH) and an ops token; print them as JSON.",
    )
    seed.add_argument(
        "--fleet-manifest",
        type=Path,
        required=True,
        metavar="PATH",
        help="the simulator's fleet manifest (JSON): the VINs and models to seed",
    )
    seed.add_argument(
        "--vehicles",
        type=positive_int,
        metavar="N",
        default=None,
        help="only the manifest's first N vehicles (default: all of them)",
    )
    seed.add_argument(
        "--per-customer",
        type=positive_int,
        default=2,
        metavar="N",
        help="vehicles per customer (default 2)",
    )
    sub.add_parser("check-invariants", help="check the money rules; exit 1 on a violation")
    return p


async def _migrate(settings: BackendSettings) -> int:
    engine = make_engine(settings.resolved_database_url())
    await migrate(engine)
    await engine.dispose()
    print("migrated")
    return 0


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


async def _seed(settings: BackendSettings, fleet: list[FleetEntry], per_customer: int) -> int:
    from backend.store import catalog

    engine = make_engine(settings.resolved_database_url())
    await migrate(engine)
    async with make_sessions(engine).begin() as session:
        await catalog.seed_catalog(session)
        customers, ops = await seed_demo(session, fleet, per_customer, SystemClock().now())
    await engine.dispose()
    out = {"ops_token": ops, "customers": [c.__dict__ for c in customers]}
    print(json.dumps(out, indent=2))
    return 0


async def _check(settings: BackendSettings) -> int:
    engine = make_engine(settings.resolved_database_url())
    async with make_sessions(engine)() as session:
        found = await invariants.check(session, SystemClock().now())
    await engine.dispose()
    for v in found:
        print(f"VIOLATION {v.rule} {v.subject}: {v.detail}")
    print(f"{len(found)} violation(s)")
    return 1 if found else 0


def _serve(settings: BackendSettings, host: str, port: int, level: str) -> int:
    import uvicorn

    from backend.http.app import create_app
    from backend.service import Backend

    try:  # the payment provider's URL, key and webhook secret are checked here
        app = create_app(Backend(settings))
    except ConfigError as exc:
        return _misconfigured(exc)
    uvicorn.run(app, host=host, port=port, log_level=level)
    return 0


def _misconfigured(exc: Exception) -> int:
    """One line naming the variable, exit 2, never a traceback (like the gateway)."""
    print(f"backend: {problem_line(exc)}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = BackendSettings()
    except ValueError as exc:  # a variable pydantic cannot read (ValidationError)
        return _misconfigured(exc)
    match args.command:
        case "migrate":
            return asyncio.run(_migrate(settings))
        case "seed":
            try:
                fleet = load_fleet_manifest(args.fleet_manifest)[: args.vehicles]
            except ConfigError as exc:
                return _misconfigured(exc)
            return asyncio.run(_seed(settings, fleet, args.per_customer))
        case "check-invariants":
            return asyncio.run(_check(settings))
        case _:
            return _serve(settings, args.host, args.port, args.log_level.lower())


if __name__ == "__main__":
    sys.exit(main())
