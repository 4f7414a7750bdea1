"""The platform's main job, end to end, on one machine (README: `bash scripts/demo.sh`).

Starts mosquitto and Redis (the launcher), a simulated fleet, the gateway, the payment
provider simulator (paysim) and the backend as their own processes, has every demo
customer buy a feature for each of their vehicles through the backend's public API,
shows live progress, and ends with a summary and the money check. Exit code 0 only if no
customer was charged for a failed activation (nor charged twice by the provider).

It explains itself: at the start, the share of its fleet that fails on purpose and the
handbook alerts that share raises (demo_expect.py); at the end, where to look next. The
services log at info into the run folder; the customers and their tokens are written to
``customers.json`` there (0600), for the Locust purchase user (docs/loadtest.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from launcher import demo_expect, demo_report
from launcher.demo_traffic import Customer, follow, ops_summary, place_purchases
from launcher.errors import ServiceFailed
from launcher.procs import free_port
from launcher.services import PythonService, run_python
from launcher.stack import LocalStack, StackOptions
from protocol.private_files import write_private
from vehicle_sim.scenario import load_scenario

FLEET_SCENARIO = Path(__file__).with_name("demo_fleet.yaml")
CUSTOMERS_FILE = "customers.json"  # in the run folder: `python -m backend seed`'s JSON
LOGS = ("vehicle_sim.log", "gateway.log", "paysim.log", "backend.log")  # in the run folder
# The handbook's retry policy, compressed from minutes to seconds (CAAS_RETRY_* set in
# the environment override it).
DEMO_RETRY = {
    "CAAS_RETRY_MAX_ATTEMPTS": "4",
    "CAAS_RETRY_INITIAL_BACKOFF_S": "1",
    "CAAS_RETRY_BACKOFF_MULTIPLIER": "2",
    "CAAS_RETRY_MAX_BACKOFF_S": "8",
    "CAAS_RETRY_STATUS_QUERY_TIMEOUT_S": "2",
    "CAAS_RETRY_ACK_TIMEOUT_S": "3",
    "CAAS_RETRY_READY_WAIT_S": "8",
    # a vehicle whose answer went missing is asked again for this long before FAILED
    "CAAS_RETRY_OUTCOME_WAIT_S": "12",
}


@dataclass
class DemoOptions:
    run_dir: Path
    vehicles: int = 1000
    seed: int = 7
    concurrency: int = 50
    timeout_s: float = 600.0
    keep_running: bool = False
    live: bool = True
    gateway_port: int = 0
    backend_port: int = 0
    paysim_port: int = 0
    simulator_port: int = 0  # its control API and /metrics
    database_url: str | None = None  # None: SQLite in the run folder
    # backend processes sharing the database (each its own port and consumer name);
    # more than one needs PostgreSQL
    backends: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. a mail server to use
    scenario: Path = FLEET_SCENARIO


@dataclass
class Platform:
    run_dir: Path
    env: dict[str, str]
    gateway_url: str
    backend_url: str  # the first backend: the provider's webhooks go there
    paysim_url: str
    simulator_url: str  # its control API and /metrics
    services: list[PythonService]
    backend_urls: list[str] = field(default_factory=list)  # every backend, first included


def start_platform(stack: LocalStack, opts: DemoOptions) -> Platform:
    run = opts.run_dir.resolve()  # the services' logs and data (the stack's folder, usually)
    gw_port, be_port = opts.gateway_port or free_port(), opts.backend_port or free_port()
    pay_port = opts.paysim_port or free_port()
    backend_url, paysim_url = f"http://127.0.0.1:{be_port}", f"http://127.0.0.1:{pay_port}"
    env = {
        **stack.env(),  # the provider's key and webhook secret among them
        **DEMO_RETRY,
        **{k: v for k, v in os.environ.items() if k.startswith("CAAS_RETRY_")},  # yours win
        "CAAS_GATEWAY_URL": f"http://127.0.0.1:{gw_port}",
        "CAAS_DATABASE_URL": opts.database_url or f"sqlite+aiosqlite:///{run / 'backend.sqlite3'}",
        "CAAS_BACKEND_ACTIVATION_DEADLINE_S": "300",
        "CAAS_PAYMENT_PROVIDER_URL": paysim_url,
        "CAAS_PAYSIM_WEBHOOK_URL": f"{backend_url}/v1/payments/webhooks",
        **opts.extra_env,
    }
    sim_port = opts.simulator_port or free_port()
    # no secret on a command line (ps shows it to everyone): the simulator takes its
    # broker URL, password included, from CAAS_FLEET_MQTT_URL in ``env``
    sim_args = [
        "vehicle_sim",
        "run",
        "--vehicles",
        str(opts.vehicles),
        "--seed",
        str(opts.seed),
        "--scenario",
        str(opts.scenario),
        "--manifest",
        str(run / "manifest.json"),
        "--no-live",
        "--control-port",
        str(sim_port),
        "--log-level",
        "INFO",
    ]
    services = [
        PythonService(
            "vehicle_sim",
            sim_args,
            env,
            run / "vehicle_sim.log",
            f"http://127.0.0.1:{sim_port}/healthz",
        ),
        PythonService(
            "gateway",
            ["gateway", "--port", str(gw_port), "--log-level", "info"],
            env,
            run / "gateway.log",
            f"http://127.0.0.1:{gw_port}/readyz",
        ),
        # before the backend, whose purchases it authorizes; its webhooks to the backend
        # wait (retried) until the backend is up
        PythonService(
            "paysim",
            [
                "paysim",
                "--port",
                str(pay_port),
                "--db",
                str(run / "paysim.sqlite3"),
                "--log-level",
                "info",
            ],
            env,
            run / "paysim.log",
            f"{paysim_url}/healthz",
        ),
    ]
    backend_ports = [be_port, *(free_port() for _ in range(opts.backends - 1))]
    services += [backend_service(n, port, env, run) for n, port in enumerate(backend_ports, 1)]
    platform = Platform(
        run_dir=run,
        env=env,
        gateway_url=f"http://127.0.0.1:{gw_port}",
        backend_url=backend_url,
        paysim_url=paysim_url,
        simulator_url=f"http://127.0.0.1:{sim_port}",
        services=[],
        backend_urls=[f"http://127.0.0.1:{port}" for port in backend_ports],
    )
    try:
        for service in services:
            print(f"demo: starting {service.name}", flush=True)
            platform.services.append(service)  # before start: a failed start is stopped too
            service.start()
    except BaseException:
        stop_platform(platform)  # the caller never gets the platform to stop it
        raise
    return platform


def backend_service(n: int, port: int, env: dict[str, str], run: Path) -> PythonService:
    """The n-th backend process (from 1): its own port, log and Redis consumer name;
    the database, the loops' work and the API are shared (docs/backend.md)."""
    name = "backend" if n == 1 else f"backend-{n}"
    return PythonService(
        name,
        ["backend", "--port", str(port), "--log-level", "info"],
        {**env, "CAAS_BACKEND_CONSUMER_NAME": f"backend-{n}"},
        run / f"{name}.log",
        f"http://127.0.0.1:{port}/healthz",
    )


def stop_platform(platform: Platform) -> None:
    """Stop the services in the reverse order of their start; one that fails to stop
    does not keep the others running."""
    for service in reversed(platform.services):
        with contextlib.suppress(Exception):
            service.stop()


def seed_customers(platform: Platform) -> tuple[list[Customer], str]:
    """Customers owning the simulator's vehicles, two each: the backend seeds them from
    the fleet manifest the simulator wrote at start. Their tokens are shown once: kept
    in the run folder's customers.json (the Locust purchase user reads it)."""
    manifest_path = platform.run_dir / "manifest.json"
    out = run_python(
        ["backend", "seed", "--fleet-manifest", str(manifest_path), "--per-customer", "2"],
        platform.env,
    )
    if not out.strip():  # exit 1: its vehicles have owners (a database seeded before)
        raise ServiceFailed("backend seed", "this database was seeded before: use a fresh one")
    write_private(platform.run_dir / CUSTOMERS_FILE, out)
    seeded = json.loads(out)
    manifest = json.loads(manifest_path.read_text())
    firmware = {v["vin"]: set(v["installed_features"]) for v in manifest["fleet"]}
    customers = [
        Customer(c["token"], c["vehicles"], {vin: firmware[vin] for vin in c["vehicles"]})
        for c in seeded["customers"]
    ]
    return customers, seeded["ops_token"]


async def drive(
    platform: Platform, opts: DemoOptions, customers: list[Customer], ops_token: str
) -> int:
    vehicles = sum(len(c.vehicles) for c in customers)
    print(
        f"demo: {len(customers)} customers buy a feature for each of their {vehicles} "
        f"vehicles ({opts.concurrency} requests at a time)",
        flush=True,
    )
    placed = await place_purchases(platform.backend_url, customers, opts.concurrency, opts.seed)
    print(f"demo: purchase answers {dict(placed.answers)}; following the activations", flush=True)
    await follow(platform.backend_url, ops_token, platform.gateway_url, opts.timeout_s, opts.live)
    async with httpx.AsyncClient(base_url=platform.backend_url, timeout=10) as http:
        summary = await ops_summary(http, ops_token)
    outcomes = await demo_report.collect(
        platform.gateway_url, platform.env["CAAS_GATEWAY_TOKEN"], placed.activation_ids
    )
    check = run_python(["backend", "check-invariants"], platform.env)
    provider = await provider_stats(platform)
    expected = demo_expect.forecast(load_scenario(opts.scenario)).expected_alerts
    demo_report.render(outcomes, summary, check, check.strip().startswith("0 violation"), expected)
    demo_report.render_provider(provider)
    # a payment the provider captured twice would be a customer charged twice
    holds = check.strip().startswith("0 violation") and provider["captured_more_than_once"] == 0
    return 0 if holds else 1


async def provider_stats(platform: Platform) -> dict[str, Any]:
    """What the payment provider saw (its control route, same key as its API)."""
    headers = {"Authorization": f"Bearer {platform.env['CAAS_PAYMENT_PROVIDER_KEY']}"}
    async with httpx.AsyncClient(base_url=platform.paysim_url, timeout=10) as http:
        stats: dict[str, Any] = (await http.get("/control/stats", headers=headers)).json()
    return stats


def where_next(platform: Platform, ops_token: str, running: bool) -> str:
    """Where to look after the summary: the consoles, every service's API docs and
    metrics while the services run; the run folder's logs and customers.json always."""
    be, gw, pay, sim = (
        platform.backend_url, platform.gateway_url, platform.paysim_url, platform.simulator_url
    )  # fmt: skip
    logs = "\n".join(f"  log      {platform.run_dir / name}" for name in LOGS)
    kept = (
        f"  customers and tokens  {platform.run_dir / CUSTOMERS_FILE} (Locust's purchase "
        "user reads it: docs/loadtest.md)"
    )
    if not running:
        return (
            "\nwhere to look next: the services have stopped (python -m launcher demo "
            "--keep-running keeps them up, with the console /ops/, /me/, each service's "
            f"/docs and /metrics)\n{logs}\n{kept}"
        )
    return (
        f"\nwhere to look next (the services keep running; Ctrl-C stops them):\n"
        f"  console  {be}/ops/  (operator demo-operator, ops token {ops_token})\n"
        f"  customer {be}/me/  (a customer's token from {CUSTOMERS_FILE} below)\n"
        f"  API docs {be}/docs  {gw}/docs  (gateway token "
        f"{platform.env['CAAS_GATEWAY_TOKEN']})  {pay}/docs  {sim}/docs\n"
        f"  metrics  {be}/metrics  {gw}/metrics  {pay}/metrics  {sim}/metrics\n"
        f"  database {platform.env.get('CAAS_DATABASE_URL')}\n{logs}\n{kept}"
    )


async def wait_for_ctrl_c() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_demo(opts: DemoOptions) -> int:
    shutil.rmtree(opts.run_dir, ignore_errors=True)  # every demo starts from nothing
    with LocalStack(StackOptions(run_dir=opts.run_dir)) as stack:
        print(f"demo: broker and Redis up; logs and data in {stack.run_dir}", flush=True)
        for line in demo_expect.explain(demo_expect.forecast(load_scenario(opts.scenario))):
            print(line, flush=True)
        platform = start_platform(stack, opts)
        try:
            customers, ops_token = seed_customers(platform)
            code = await drive(platform, opts, customers, ops_token)
            print(where_next(platform, ops_token, opts.keep_running), flush=True)
            if opts.keep_running:
                await wait_for_ctrl_c()
            return code
        finally:
            stop_platform(platform)
