"""Command-line entry points: serve (default), migrate, seed, operators, customers,
check-invariants."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from backend.audit import money as invariants
from backend.config import BackendSettings
from backend.domain.states import PaymentMethod
from backend.errors import Conflict
from backend.services import customers, operators
from backend.services.seed import FleetEntry, load_fleet_manifest, seed_demo
from backend.store.db import make_engine, make_sessions, migrate, wait_for_database
from protocol.errors import ProtocolError
from protocol.logsetup import configure_logging
from protocol.probes import wait_for_redis
from protocol.startup import EXIT_CODES_EPILOG, DefaultsHelpFormatter, refuse
from protocol.timeutil import SystemClock, format_ts

T = TypeVar("T")

DESCRIPTION = (
    "CaaS business backend: HTTP API + outbox relay + event consumer (configured by "
    "CAAS_* environment variables: docs/backend.md; CAAS_STARTUP_WAIT_S bounds the wait "
    "for the database and Redis at start)."
)
LOG_LEVELS = ("debug", "info", "warning")
SERVE_OPTIONS: tuple[tuple[str, type, object, str], ...] = (
    ("--host", str, "127.0.0.1", "listen address"),
    ("--port", int, 8080, "listen port"),
    ("--log-level", str, "info", "log level"),
)


def _serve_options(p: argparse.ArgumentParser, shown_defaults: bool) -> None:
    """--host/--port/--log-level, before the command (the default: serve) and after
    it. After it they default to SUPPRESS, so they override only when given; the help
    then says the default itself (the formatter leaves SUPPRESSed defaults out)."""
    for flag, kind, value, text in SERVE_OPTIONS:
        extra: dict[str, Any] = {"choices": LOG_LEVELS} if flag == "--log-level" else {}
        if shown_defaults:
            p.add_argument(flag, type=kind, default=value, help=text, **extra)
        else:
            helped = f"{text} (default: {value})"
            p.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=helped, **extra)


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str, **kw: Any
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=text, description=kw.pop("description", text), epilog=EXIT_CODES_EPILOG,
        formatter_class=DefaultsHelpFormatter, **kw,
    )  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m backend",
        description=DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=DefaultsHelpFormatter,
    )
    _serve_options(p, shown_defaults=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _serve_options(_command(sub, "serve", "run the API and the background loops (the default)"),
                   shown_defaults=False)  # fmt: skip
    _serve_options(_command(sub, "migrate", "upgrade the database schema to the latest "
                            "revision"), shown_defaults=False)  # fmt: skip
    seed = _command(
        sub,
        "seed",
        "create demo customers owning the vehicles of a fleet manifest; prints their tokens",
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
        "--per-customer", type=positive_int, default=2, metavar="N", help="vehicles per customer"
    )
    _serve_options(seed, shown_defaults=False)
    _operators_parser(sub)
    _customers_parser(sub)
    _serve_options(
        _command(sub, "check-invariants", "check the money rules; exit 1 on a violation"),
        shown_defaults=False,
    )
    return p


def _operators_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ops = _command(
        sub,
        "operators",
        "create an operator (a person with their own ops token) or list them",
        description="Operators are people: each has a name and an ops token of their own; "
        "what they do is audited under that name (GET /v1/ops/audit).",
    )
    what = ops.add_subparsers(dest="operators_command", required=True)
    create = _command(
        what,
        "create",
        "create an operator; prints their ops token (shown this once only)",
        description="Create an operator and print their new ops token on stdout; only "
        "its hash is stored, so it cannot be shown again.",
    )
    create.add_argument(
        "--name", required=True, type=_name, help='the person\'s name, e.g. "Ana Ruiz"'
    )
    _command(what, "list", "every operator's name and token prefix (never a token)")


def _customers_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    people = _command(
        sub, "customers", "create a customer (prints their token once) or list them",
        description="Customers own vehicles and buy features for them (the customer API, "
        "/me/). The demo's customers come from seed.",
    )  # fmt: skip
    what = people.add_subparsers(dest="customers_command", required=True)
    create = _command(
        what, "create", "create a customer; prints their token (shown this once only)",
        description="Create a customer owning the given vehicles and print their new "
        "token on stdout; only its hash is stored, so it cannot be shown again.",
    )  # fmt: skip
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
        help="a vehicle they own (repeat for more)",
    )
    create.add_argument(
        "--payment-method",
        choices=[m.value for m in PaymentMethod],
        default=PaymentMethod.CARD.value,
        help="card: a hold captured once the feature is on; direct_debit: charged at once, "
        "refunded on failure",
    )
    _command(what, "list", "every customer, their e-mail and vehicles (never a token)")


def _checked(parse: Callable[..., Any], *args: Any) -> Callable[[str], Any]:
    """An argparse type from a parser raising ValueError: its message, not a traceback."""

    def check(text: str) -> Any:
        try:
            return parse(text, *args)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


async def _migrate(settings: BackendSettings) -> int:
    engine = await _open_database(settings)
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
    engine = await _open_database(settings)
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


async def _read(settings: BackendSettings, read: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """What ``read`` finds in the (migrated) database: the admin commands' lists."""
    engine = await _open_database(settings)
    try:
        await migrate(engine)
        async with make_sessions(engine)() as session:
            return await read(session)
    finally:
        await engine.dispose()


async def _list_operators(settings: BackendSettings) -> int:
    found = await _read(settings, operators.operators)
    for op in found:
        print(f"{op.name}\t{op.prefix}…\t{format_ts(op.created_at)}")
    return 0


async def _create_customer(settings: BackendSettings, args: argparse.Namespace) -> int:
    engine = await _open_database(settings)
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
    found = await _read(settings, customers.customers)
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

    engine = await _open_database(settings)
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
    engine = await _open_database(settings)
    async with make_sessions(engine)() as session:
        found = await invariants.check(session, SystemClock().now())
    await engine.dispose()
    for v in found:
        print(f"VIOLATION {v.rule} {v.subject}: {v.detail}")
    print(f"{len(found)} violation(s)")
    return 1 if found else 0


async def _open_database(settings: BackendSettings) -> AsyncEngine:
    """An engine on CAAS_DATABASE_URL once the database answers (bounded wait)."""
    engine = make_engine(settings.resolved_database_url())
    try:
        await wait_for_database(engine, settings.startup_wait_s)
    except BaseException:
        await engine.dispose()
        raise
    return engine


async def _wait_for_dependencies(settings: BackendSettings) -> None:
    """The database and Redis (when configured) answer and take our credentials; after
    the start, their outages are ridden out by the loops."""
    await (await _open_database(settings)).dispose()
    redis_url = settings.resolved_redis_url()
    if redis_url:
        await wait_for_redis(redis_url, "CAAS_REDIS_URL", settings.startup_wait_s)


def _serve(settings: BackendSettings, host: str, port: int, level: str) -> int:
    from backend.http.app import create_app
    from backend.service import Backend
    from protocol.heap import freeze_start_up
    from protocol.http_edge import serve

    # the provider's URL, key and webhook secret are checked by Backend(); the database
    # and Redis here, before uvicorn: its start-up failure would be a traceback
    asyncio.run(_wait_for_dependencies(settings))
    app = create_app(Backend(settings))
    freeze_start_up()  # modules, mappers, app: out of every collection's walk
    serve(app, host, port, log_level=level, access_log=True)
    return 0


def _run(args: argparse.Namespace, settings: BackendSettings) -> int:
    match args.command:
        case "migrate":
            return asyncio.run(_migrate(settings))
        case "seed":
            fleet = load_fleet_manifest(args.fleet_manifest)[: args.vehicles]
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
            return _serve(settings, args.host, args.port, args.log_level)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level)
    try:  # each problem one line with its exit code (protocol/startup.py), no traceback
        settings = BackendSettings()
    except ValueError as exc:  # a variable pydantic cannot read (ValidationError)
        return refuse("backend", exc)
    try:
        return _run(args, settings)
    except ProtocolError as exc:  # ConfigError, a dependency unreachable or refusing
        return refuse("backend", exc)


if __name__ == "__main__":
    sys.exit(main())
