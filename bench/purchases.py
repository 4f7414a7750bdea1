"""The backend's purchase path to CHARGED (issue 6, the benchmark's second mode; issue 14).

Starts the whole platform (broker, Redis, an all-online fleet, gateway, payment provider,
``--backends`` backend processes on one PostgreSQL or on SQLite) as for the demo, has one
purchase per vehicle placed through the public API (``--concurrency`` requests at a
time, spread over the backends in turn), and follows the backend's ops summary until
every purchase is settled. Reports purchases accepted per second and purchases CHARGED
per second from the first request to the last charge, the CPU each process used per
purchase over that time (from /proc), on PostgreSQL the statements and transactions per
purchase counted by PostgreSQL itself (pg_stat_statements, pg_stat_database), then the
money check (``python -m backend check-invariants``) and what the payment provider
counted.

The baseline, measured in the same run on the same database before the purchases: the
same number of transactions and statements per purchase replayed by a bare asyncpg
client (bench/purchase_replay.py), at the same concurrency; ``ratio`` is the backend's
CHARGED /s over the baseline's purchases /s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import purchase_replay
from bench.activations import CpuMeter, process_ids
from bench.report import emit
from launcher.demo import DemoOptions, Platform, provider_stats, seed_customers, start_platform
from launcher.demo_traffic import Placed, ops_summary, place_purchases
from launcher.postgres import PostgresServer, PostgresSettings
from launcher.procs import free_port
from launcher.services import run_python
from launcher.stack import LocalStack, StackOptions

ALL_ONLINE = "name: bench\nmix: {online: 1}\n"
BACKEND_POOL = 30  # connections one backend process may hold (store/db.py: 10 + 20 overflow)
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "START", "SAVEPOINT", "RELEASE")


async def charged_count(backend_url: str, ops_token: str) -> tuple[int, int]:
    async with httpx.AsyncClient(base_url=backend_url, timeout=10) as http:
        summary = await ops_summary(http, ops_token)
    payments = summary["payments_by_state"]
    return payments.get("CHARGED", 0), payments.get("FAILED_NO_CHARGE", 0)


# How the payments stand, read by the benchmark itself on PostgreSQL: the ops summary
# (several aggregate queries over every purchase) asked four times a second cost the
# backend and PostgreSQL as much as a sixth of what was measured, and its statements
# were counted as the purchases'. ``bench_charged`` marks it in pg_stat_statements.
SETTLED = (
    "SELECT count(*) FILTER (WHERE state = 'CHARGED') AS bench_charged,"
    " count(*) FILTER (WHERE state = 'FAILED_NO_CHARGE') FROM payments"
)


class SettledCounter:
    """(CHARGED, FAILED_NO_CHARGE) now: from PostgreSQL directly when there is one (its
    queries counted, to be left out of the purchases' statements and transactions),
    else from the backend's ops summary."""

    def __init__(self, backend_url: str, ops_token: str, dsn: str | None) -> None:
        self.backend_url, self.ops_token, self.dsn = backend_url, ops_token, dsn
        self.conn: asyncpg.Connection | None = None
        self.queries = 0

    async def __call__(self) -> tuple[int, int]:
        if self.dsn is None:
            return await charged_count(self.backend_url, self.ops_token)
        if self.conn is None:
            self.conn = await asyncpg.connect(self.dsn)
        row = await self.conn.fetchrow(SETTLED)
        self.queries += 1
        return int(row[0]), int(row[1])

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class PgCounts:
    """Statements (pg_stat_statements, transaction control apart) and transactions
    (pg_stat_database: commits + rollbacks) in the benchmark's database, counted by
    PostgreSQL between ``start()`` and ``stop()``: every client's, the backends' idle
    polling and the ops summaries the benchmark reads included."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.xacts = 0

    async def _xacts(self, conn: asyncpg.Connection) -> int:
        value = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
        return int(value)

    async def start(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("SELECT pg_stat_statements_reset()")
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            self.xacts = await self._xacts(conn)
        finally:
            await conn.close()

    async def stop(self, purchases: int, own_queries: int = 0) -> dict[str, Any]:
        """Per purchase; ``own_queries``: the benchmark's progress queries (each its own
        transaction), left out."""
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d"
                " ON d.oid = s.dbid WHERE d.datname = current_database()"
            )
            # the statistics collector publishes a backend's counts when it goes idle:
            # give the last commits a moment to reach the view
            await asyncio.sleep(1.0)
            xacts = await self._xacts(conn) - self.xacts - own_queries
        finally:
            await conn.close()
        control = sum(
            r["calls"] for r in rows if r["query"].upper().startswith(TRANSACTION_CONTROL)
        )
        statements = sum(r["calls"] for r in rows) - control
        top = sorted(rows, key=lambda r: -r["calls"])[:12]
        per = max(1, purchases)
        return {
            "statements_per_purchase": round(statements / per, 2),
            "transactions_per_purchase": round(xacts / per, 2),
            "transaction_control_per_purchase": round(control / per, 2),
            # distinct statement texts (an IN list or a multi-row VALUES of each length
            # is one more): each is prepared once per pooled connection
            "distinct_statements": len(rows),
            "top_statements": [
                {"calls_per_purchase": round(r["calls"] / per, 2), "query": r["query"][:160]}
                for r in top
            ],
        }


def dsn_of(pg: PostgresServer) -> str:
    return pg.url().replace("postgresql+asyncpg://", "postgresql://")


async def measure(vehicles: int, concurrency: int, database: str, backends: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="caas-purchases-") as tmp:
        run_dir = Path(tmp) / "run"
        scenario = Path(tmp) / "fleet.yaml"
        scenario.write_text(ALL_ONLINE)
        pg = (
            PostgresServer(
                PostgresSettings(port=free_port(), password="bench", stat_statements=True)
            )
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
            backends=backends,
        )
        try:
            with LocalStack(StackOptions(run_dir=run_dir)) as stack:
                platform = start_platform(stack, opts)
                try:
                    customers, ops_token = seed_customers(platform)
                    baseline = await measure_baseline(pg, vehicles, concurrency, backends)
                    pids = process_ids(stack, platform.services)
                    if pg is not None and pg.proc is not None:
                        pids["postgres (all processes)"] = pg.proc.pid
                    meter = CpuMeter(pids, trees=frozenset({"postgres (all processes)"}))
                    counts = PgCounts(dsn_of(pg)) if pg is not None else None
                    report = await drive(platform, customers, ops_token, opts, meter, counts)
                    report = {**report, **ratios(report, baseline, database, backends)}
                    return {**report, **await money_check(platform)}
                finally:
                    for service in reversed(platform.services):
                        service.stop()
        finally:
            if pg is not None:
                pg.remove()


async def measure_baseline(
    pg: PostgresServer | None, purchases: int, concurrency: int, backends: int
) -> dict[str, Any] | None:
    """The bare asyncpg replay on the same database, before the backends' purchases."""
    if pg is None:
        return None
    print(f"baseline: {purchases} purchases' statements by a bare asyncpg client", flush=True)
    counts = PgCounts(dsn_of(pg))
    await counts.start()
    pool = min(concurrency, BACKEND_POOL * backends)
    try:
        result = await purchase_replay.replay(dsn_of(pg), purchases, concurrency, pool)
        measured = await counts.stop(purchases)
    finally:
        await purchase_replay.drop(dsn_of(pg))
    print(f"baseline: {result['purchases_per_s']} purchases/s", flush=True)
    return {
        **result,
        "statements_per_purchase": measured["statements_per_purchase"],
        "transactions_per_purchase": measured["transactions_per_purchase"],
    }


def ratios(
    report: dict[str, Any], baseline: dict[str, Any] | None, database: str, backends: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"database": database, "backends": backends, "baseline": baseline}
    if baseline:
        out["baseline_purchases_per_s"] = baseline["purchases_per_s"]
        out["ratio"] = round(report["purchases_per_s"] / baseline["purchases_per_s"], 3)
    return out


async def drive(
    platform: Platform,
    customers: list[Any],
    ops_token: str,
    opts: DemoOptions,
    meter: CpuMeter,
    counts: PgCounts | None,
) -> dict[str, Any]:
    urls = platform.backend_urls or [platform.backend_url]
    print(
        f"placing {opts.vehicles} purchases, {opts.concurrency} at a time, "
        f"over {len(urls)} backend(s)",
        flush=True,
    )
    if counts is not None:
        await counts.start()
    meter.start()
    started = time.perf_counter()
    placing = asyncio.create_task(place_purchases(urls, customers, opts.concurrency, opts.seed))
    settled = SettledCounter(platform.backend_url, ops_token, counts.dsn if counts else None)
    try:
        placed_s, charged, failed = await follow_charges(settled, placing, started)
        seconds = time.perf_counter() - started
        cpu = meter.stop(charged)
    finally:
        await settled.close()
    placed: Placed = placing.result()
    accepted = len(placed.activation_ids)
    sql = await counts.stop(charged, settled.queries) if counts is not None else {}
    print(f"{charged} CHARGED, {failed} FAILED_NO_CHARGE in {seconds:.1f}s", flush=True)
    backend_ms = sum(v for k, v in cpu.items() if k.startswith("backend"))
    return {
        "purchases": opts.vehicles,
        "accepted": accepted,
        "answers": dict(placed.answers),
        "accepted_per_s": round(accepted / placed_s, 1),
        "charged": charged,
        "failed_no_charge": failed,
        "seconds_to_last_charge": round(seconds, 2),
        "purchases_per_s": round(charged / seconds, 1),
        "charged_per_s": round(charged / seconds, 1),  # the name before issue 14
        "backend_cpu_ms_per_purchase": round(backend_ms, 2),
        "cpu_ms_per_purchase": cpu,
        **sql,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def follow_charges(
    settled: SettledCounter, placing: asyncio.Task[Placed], started: float
) -> tuple[float, int, int]:
    """Wait until every accepted purchase is settled, a progress line every 2 s;
    (seconds the placing took, CHARGED, FAILED_NO_CHARGE)."""
    placed_s = 0.0
    charged = failed = 0
    last_line = 0.0
    while time.perf_counter() - started < 600:
        await asyncio.sleep(0.25)
        with contextlib.suppress(httpx.HTTPError):
            charged, failed = await settled()
        now = time.perf_counter() - started
        if placing.done() and not placed_s:
            placed_s = now
        if now - last_line >= 2:
            last_line = now
            placed = "all placed" if placing.done() else "placing"
            print(f"  {now:6.1f}s  {placed}  CHARGED {charged}  FAILED {failed}", flush=True)
        if placing.done() and charged + failed >= len(placing.result().activation_ids):
            break
    return placed_s or time.perf_counter() - started, charged, failed


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


def run(
    vehicles: int, concurrency: int, database: str, backends: int, json_out: Path | None
) -> int:
    if backends > 1 and database != "postgres":
        raise SystemExit("--backends above 1 needs --database postgres")
    report = asyncio.run(measure(vehicles, concurrency, database, backends))
    emit(report, json_out)
    money_ok = report["invariant_violations"] == 0
    money_ok = money_ok and report["provider"]["captured_more_than_once"] == 0
    return 0 if report["charged"] == report["accepted"] > 0 and money_ok else 1
