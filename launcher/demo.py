"""The platform's main job, end to end, on one machine (README: `bash scripts/demo.sh`).

Starts mosquitto and Redis (the launcher), a simulated fleet, the gateway, the payment
provider simulator (paysim) and the backend as their own processes, has every demo
customer buy a feature for each of their vehicles through the backend's public API,
shows live progress, and ends with a summary and the money check. Exit code 0 only if no
customer was charged for a failed activation (nor charged twice by the provider).
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

from launcher import demo_report
from launcher.demo_traffic import Customer, follow, ops_summary, place_purchases
from launcher.procs import free_port
from launcher.services import PythonService, run_python
from launcher.stack import LocalStack, StackOptions

FLEET_SCENARIO = Path(__file__).with_name("demo_fleet.yaml")
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
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. a mail server to use
    scenario: Path = FLEET_SCENARIO


@dataclass
class Platform:
    run_dir: Path
    env: dict[str, str]
    gateway_url: str
    backend_url: str
    paysim_url: str
    simulator_url: str  # its control API and /metrics
    services: list[PythonService]


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
            ["gateway", "--port", str(gw_port), "--log-level", "warning"],
            env,
            run / "gateway.log",
            f"http://127.0.0.1:{gw_port}/readyz",
        ),
        # before the backend, whose purchases it authorizes; its webhooks to the backend
        # wait (retried) until the backend is up
        PythonService(
            "paysim",
            ["paysim", "--port", str(pay_port), "--db", str(run / "paysim.sqlite3")],
            env,
            run / "paysim.log",
            f"{paysim_url}/healthz",
        ),
        PythonService(
            "backend",
            ["backend", "--port", str(be_port), "--log-level", "warning"],
            env,
            run / "backend.log",
            f"{backend_url}/healthz",
        ),
    ]
    platform = Platform(
        run_dir=run,
        env=env,
        gateway_url=f"http://127.0.0.1:{gw_port}",
        backend_url=backend_url,
        paysim_url=paysim_url,
        simulator_url=f"http://127.0.0.1:{sim_port}",
        services=[],
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


def stop_platform(platform: Platform) -> None:
    """Stop the services in the reverse order of their start; one that fails to stop
    does not keep the others running."""
    for service in reversed(platform.services):
        with contextlib.suppress(Exception):
            service.stop()


def seed_customers(platform: Platform) -> tuple[list[Customer], str]:
    """Customers owning the simulator's vehicles, two each: the backend seeds them from
    the fleet manifest the simulator wrote at start."""
    manifest_path = platform.run_dir / "manifest.json"
    out = run_python(
        ["backend", "seed", "--fleet-manifest", str(manifest_path), "--per-customer", "2"],
        platform.env,
    )
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
    demo_report.render(outcomes, summary, check, check.strip().startswith("0 violation"))
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


async def wait_for_ctrl_c(platform: Platform, customers: list[Customer], ops_token: str) -> None:
    print(
        f"\nservices keep running (Ctrl-C stops them):\n  backend  {platform.backend_url}/docs"
        f"  (customer token {customers[0].token}, ops token {ops_token})\n"
        f"  console  {platform.backend_url}/ops/  (sign in with the ops token: demo-operator)\n"
        f"  customer {platform.backend_url}/me/  (sign in with the customer token)\n"
        f"  metrics  {platform.backend_url}/metrics, {platform.gateway_url}/metrics\n"
        f"  gateway  {platform.gateway_url}/docs  (token {platform.env['CAAS_GATEWAY_TOKEN']})"
        f"\n  paysim   {platform.paysim_url}/docs  (key "
        f"{platform.env['CAAS_PAYMENT_PROVIDER_KEY']})"
        f"\n  env      {platform.env.get('CAAS_DATABASE_URL')}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_demo(opts: DemoOptions) -> int:
    shutil.rmtree(opts.run_dir, ignore_errors=True)  # every demo starts from nothing
    with LocalStack(StackOptions(run_dir=opts.run_dir)) as stack:
        print(f"demo: broker and Redis up; logs and data in {stack.run_dir}", flush=True)
        platform = start_platform(stack, opts)
        try:
            customers, ops_token = seed_customers(platform)
            code = await drive(platform, opts, customers, ops_token)
            if opts.keep_running:
                await wait_for_ctrl_c(platform, customers, ops_token)
            return code
        finally:
            stop_platform(platform)
