"""Command-line entry points: serve (default), migrate, seed, operators, customers,
check-invariants."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.audit import money as invariants
from backend.config import BackendSettings
from backend.domain.states import PaymentMethod
from backend.errors import Conflict
from backend.services import customers, operators
from backend.services.seed import FleetEntry, load_fleet_manifest, seed_demo
from backend.store.db import make_engine, make_sessions, migrate
from protocol.logsetup import configure_logging
from protocol.settings import ConfigError, problem_line
from protocol.timeutil import SystemClock, format_ts


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
    _operators_parser(sub)
    _customers_parser(sub)
    sub.add_parser("check-invariants", help="check the money rules; exit 1 on a violation")
    return p


def _operators_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ops = sub.add_parser(
        "operators",
        help="create an operator (a person with their own ops token) or list them",
        description="Operators are people: each has a name and an ops token of their own; "
        "what they do is audited under that name (GET /v1/ops/audit).",
    )
    what = ops.add_subparsers(dest="operators_command", required=True)
    create = what.add_parser(
        "create",
        help="create an operator; prints their ops token (shown this once only)",
        description="Create an operator and print their new ops token on stdout; only "
        "its hash is stored, so it cannot be shown again.",
    )
    create.add_argument(
        "--name", required=True, type=_name, help='the person\'s name, e.g. "Ana Ruiz"'
    )
    what.add_parser("list", help="every operator's name and token prefix (never a token)")


def _customers_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    people = sub.add_parser(
        "customers",
        help="create a customer (prints their token once) or list them",
        description="Customers own vehicles and buy features for them (the customer API, "
        "/me/). The demo's customers come from seed.",
    )
    what = people.add_subparsers(dest="customers_command", required=True)
    create = what.add_parser(
        "create",
        help="create a customer; prints their token (shown this once only)",
        description="Create a customer owning the given vehicles and print their new "
        "token on stdout; only its hash is stored, so it cannot be shown again.",
    )
    create.add_argument(
        "--name",
        required=True,
        type=_checked(operators.person_name, "a customer's"),
        help='the customer\'s name, e.g. "Marta Gil"',
    )
    create.add_argument(
        "--email",
        required=True,
        type=_checked(customers.email_address),
        help="where their notices go (e-mail)",
    )
    create.add_argument(
        "--vehicle",
        action="append",
        default=[],
        type=_checked(customers.vehicle_entry),
        metavar="VIN:MODEL[:FIRMWARE]",
        help="a vehicle they own (repeat for more; default none)",
    )
    create.add_argument(
        "--payment-method",
        choices=[m.value for m in PaymentMethod],
        default=PaymentMethod.CARD.value,
        help="card: a hold captured once the feature is on; direct_debit: charged at once, "
        "refunded on failure (default card)",
    )
    what.add_parser("list", help="every customer, their e-mail and vehicles (never a token)")


def _checked(parse: Callable[..., Any], *args: Any) -> Callable[[str], Any]:
    """An argparse type from a parser raising ValueError: its message, not a traceback."""

    def check(text: str) -> Any:
        try:
            return parse(text, *args)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


async def _migrate(settings: BackendSettings) -> int:
    engine = make_engine(settings.resolved_database_url())
    await migrate(engine)
    await engine.dispose()
    print("migrated")
    return 0


def _name(text: str) -> str:
    try:
        return operators.operator_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def _create_operator(settings: BackendSettings, name: str) -> int:
    engine = make_engine(settings.resolved_database_url())
    await migrate(engine)
    try:
        async with make_sessions(engine).begin() as session:
            token = await operators.create_operator(session, name, SystemClock().now())
    except Conflict as exc:
        print(f"backend: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    print(f"operator {name!r} created; their token (shown once):", file=sys.stderr)
    print(token)
    return 0


async def _list_operators(settings: BackendSettings) -> int:
    engine = make_engine(settings.resolved_database_url())
    await migrate(engine)
    async with make_sessions(engine)() as session:
        found = await operators.operators(session)
    await engine.dispose()
    for op in found:
        print(f"{op.name}\t{op.prefix}…\t{format_ts(op.created_at)}")
    return 0


async def _create_customer(settings: BackendSettings, args: argparse.Namespace) -> int:
    engine = make_engine(settings.resolved_database_url())
    await migrate(engine)
    method = PaymentMethod(args.payment_method)
    try:
        async with make_sessions(engine).begin() as session:
            made = await customers.create(
                session, args.name, args.email, args.vehicle, method, SystemClock().now()
            )
    except Conflict as exc:
        print(f"backend: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    print(
        f"customer {args.name!r} created ({made.customer_id}, {len(made.vehicles)} "
        "vehicle(s)); their token (shown once):",
        file=sys.stderr,
    )
    print(made.token)
    return 0


async def _list_customers(settings: BackendSettings) -> int:
    engine = make_engine(settings.resolved_database_url())
    await migrate(engine)
    async with make_sessions(engine)() as session:
        found = await customers.customers(session)
    await engine.dispose()
    for c in found:
        fields = (c.customer_id, c.name, c.email, c.payment_method, ",".join(c.vins) or "-")
        print("\t".join((*fields, format_ts(c.created_at))))
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
    now = SystemClock().now()
    try:
        async with make_sessions(engine).begin() as session:
            await catalog.seed_catalog(session, now)
            customers, ops = await seed_demo(session, fleet, per_customer, now)
    except Conflict as exc:
        print(f"backend: seed: {exc.detail}", file=sys.stderr)
        return 1
    finally:
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
        case "operators" if args.operators_command == "create":
            return asyncio.run(_create_operator(settings, args.name))
        case "operators":
            return asyncio.run(_list_operators(settings))
        case "customers" if args.customers_command == "create":
            return asyncio.run(_create_customer(settings, args))
        case "customers":
            return asyncio.run(_list_customers(settings))
        case "check-invariants":
            return asyncio.run(_check(settings))
        case _:
            return _serve(settings, args.host, args.port, args.log_level.lower())


if __name__ == "__main__":
    sys.exit(main())
