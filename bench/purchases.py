"""The backend's purchase path to CHARGED (issue 6, the benchmark's second mode).

Starts the whole platform (broker, Redis, an all-online fleet, gateway, backend on
PostgreSQL or SQLite) as for the demo, has one purchase per vehicle placed through the
public API (``--concurrency`` requests at a time), and follows the backend's ops
summary until every purchase is settled. Reports purchases accepted per second and
purchases CHARGED per second from the first request to the last charge, then the money
check (``python -m backend check-invariants``) and what the payment provider counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from launcher.demo import DemoOptions, Platform, provider_stats, seed_customers, start_platform
from launcher.demo_traffic import ops_summary, place_purchases
from launcher.postgres import PostgresServer, PostgresSettings
from launcher.procs import free_port
from launcher.services import run_python
from launcher.stack import LocalStack, StackOptions

ALL_ONLINE = "name: bench\nmix: {online: 1}\n"


async def charged_count(backend_url: str, ops_token: str) -> tuple[int, int]:
    async with httpx.AsyncClient(base_url=backend_url, timeout=10) as http:
        summary = await ops_summary(http, ops_token)
    payments = summary["payments_by_state"]
    return payments.get("CHARGED", 0), payments.get("FAILED_NO_CHARGE", 0)


async def measure(vehicles: int, concurrency: int, database: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="caas-purchases-") as tmp:
        run_dir = Path(tmp) / "run"
        scenario = Path(tmp) / "fleet.yaml"
        scenario.write_text(ALL_ONLINE)
        pg = (
            PostgresServer(PostgresSettings(port=free_port(), password="bench"))
            if (database == "postgres")
            else None
        )
        if pg is not None:
            pg.start()
        opts = DemoOptions(
            run_dir=run_dir,
            vehicles=vehicles,
            concurrency=concurrency,
            live=False,
            scenario=scenario,
            database_url=pg.url() if pg is not None else None,
        )
        try:
            with LocalStack(StackOptions(run_dir=run_dir)) as stack:
                platform = start_platform(stack, opts)
                try:
                    customers, ops_token = seed_customers(platform)
                    report = await drive(platform.backend_url, customers, ops_token, opts, database)
                    return {**report, **await money_check(platform)}
                finally:
                    for service in reversed(platform.services):
                        service.stop()
        finally:
            if pg is not None:
                pg.remove()


async def drive(
    backend_url: str, customers: list[Any], ops_token: str, opts: DemoOptions, database: str
) -> dict[str, Any]:
    print(f"placing {opts.vehicles} purchases, {opts.concurrency} at a time", flush=True)
    started = time.perf_counter()
    placed = await place_purchases(backend_url, customers, opts.concurrency, opts.seed)
    placed_s = time.perf_counter() - started
    accepted = len(placed.activation_ids)
    charged = failed = 0
    while charged + failed < accepted and time.perf_counter() - started < 600:
        await asyncio.sleep(0.25)
        charged, failed = await charged_count(backend_url, ops_token)
    seconds = time.perf_counter() - started
    print(f"{charged} CHARGED, {failed} FAILED_NO_CHARGE in {seconds:.1f}s", flush=True)
    return {
        "database": database,
        "purchases": opts.vehicles,
        "accepted": accepted,
        "answers": dict(placed.answers),
        "accepted_per_s": round(accepted / placed_s, 1),
        "charged": charged,
        "failed_no_charge": failed,
        "seconds_to_last_charge": round(seconds, 2),
        "charged_per_s": round(charged / seconds, 1),
        "cpus": os.cpu_count(),
    }


async def money_check(platform: Platform) -> dict[str, Any]:
    """The backend's invariant check and the provider's own count of captures."""
    check = run_python(["backend", "check-invariants"], platform.env).strip().splitlines()
    violations = int(check[-1].split()[0]) if check and check[-1].endswith("violation(s)") else -1
    stats = await provider_stats(platform)
    return {
        "invariant_violations": violations,
        "provider": {
            "captures": sum(stats["real_captures"].values()),
            "captured_more_than_once": stats["captured_more_than_once"],
            "open_authorizations": stats["open_authorizations"],
            "webhooks": stats["webhooks"],
        },
    }


def run(vehicles: int, concurrency: int, database: str, json_out: Path | None) -> int:
    report = asyncio.run(measure(vehicles, concurrency, database))
    text = json.dumps(report, indent=2)
    print(text)
    if json_out is not None:
        json_out.write_text(text)
    money_ok = report["invariant_violations"] == 0
    money_ok = money_ok and report["provider"]["captured_more_than_once"] == 0
    return 0 if report["charged"] == report["accepted"] > 0 and money_ok else 1
