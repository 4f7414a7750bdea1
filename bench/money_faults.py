"""Faults at the money boundary, measured from outside, on the real parts.

``python -m bench money-faults [SCENARIO ...] [--database sqlite|postgres]
[--vehicles N] [--in-flight M] [--json OUT]``

The platform starts as the demo starts it (broker, Redis, the demo's fleet, the
gateway, the payment provider and the backend, each its own process), with a local
SMTP server standing in for the customers' mailboxes. Every vehicle's owner buys a
feature through the public API while the fleet's network is quiet (the simulator is
SIGSTOPped: commands wait at the broker, activations stay in flight); once at least M
purchases are in flight, the scenario's processes are SIGKILLed and restarted 2 s
later, and the fleet wakes up (SIGCONT) when they are back. When everything has
settled it counts what a customer or an auditor would:

- ``check-invariants`` (the money rules, from the database) and its violations;
- holds left open, features active but never charged, double captures (at the
  provider), "you are charged" e-mails whose payment was not captured;
- e-mails delivered twice (same Message-ID at the mailbox).

backend-kill   the backend (its database survives: SQLite file or PostgreSQL)
provider-kill  the payment provider (its SQLite file survives)
both-kill      both at once

Exit code 0 only if every run met its bar (``ok`` in the report).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import and_, func, select

from backend.domain.states import HOLD_OPEN, IN_FLIGHT, OpState, PaymentState
from backend.store.db import make_engine, make_sessions
from backend.store.models import MoneyOp, Notification, Payment, Purchase
from bench.smtp_sink import SmtpSink
from launcher.demo import DemoOptions, Platform, seed_customers, start_platform
from launcher.demo_traffic import ops_summary, place_purchases
from launcher.postgres import PostgresServer, PostgresSettings
from launcher.procs import free_port
from launcher.services import PythonService, run_python
from launcher.stack import LocalStack, StackOptions

SCENARIOS: dict[str, tuple[str, ...]] = {
    "backend-kill": ("backend",),
    "provider-kill": ("paysim",),
    "both-kill": ("paysim", "backend"),
}
SEED = 7

DOWN_S = 2.0
SETTLE_TIMEOUT_S = 240.0
CHARGED_NOTICE = "You are charged"  # the success notice of a paid purchase


@dataclass
class Report:
    scenario: str
    database: str
    vehicles: int
    in_flight_at_kill: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    purchases_by_state: dict[str, int] = field(default_factory=dict)
    payments_by_state: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    holds_left_open: int = 0
    active_never_charged: int = 0
    double_captures: int = 0
    charged_notice_without_capture: int = 0
    emails: int = 0
    emails_twice: int = 0
    settle_s: float = 0.0
    settled: bool = False

    @property
    def ok(self) -> bool:
        zeros = (
            len(self.violations),
            self.holds_left_open,
            self.active_never_charged,
            self.double_captures,
            self.charged_notice_without_capture,
            self.emails_twice,
        )
        return self.settled and self.in_flight_at_kill > 0 and not any(zeros)


@contextmanager
def database(kind: str, run_dir: Path) -> Iterator[str]:
    """The backend's database URL: a SQLite file in the run folder, or a private
    PostgreSQL cluster removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{run_dir / 'backend.sqlite3'}"
        return
    server = PostgresServer(PostgresSettings(port=free_port(), password="bench"))
    server.start()
    try:
        yield server.url()
    finally:
        server.remove()


async def run_scenario(
    scenario: str,
    kind: str,
    vehicles: int,
    in_flight: int,
    concurrency: int = 100,
    log: bool = True,
    env: dict[str, str] | None = None,
) -> Report:
    """One scenario; ``env``: more variables for the services (the tests shorten the
    gateway's retry policy with it)."""
    report = Report(scenario, kind, vehicles)
    with tempfile.TemporaryDirectory(prefix="caas-money-") as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        sink = await SmtpSink().start()
        try:
            with (
                database(kind, run_dir) as db_url,
                LocalStack(StackOptions(run_dir=run_dir)) as stack,
            ):
                opts = DemoOptions(
                    run_dir=run_dir,
                    vehicles=vehicles,
                    seed=SEED,
                    concurrency=concurrency,
                    live=False,
                    database_url=db_url,
                    extra_env={**(env or {}), "CAAS_BACKEND_SMTP_URL": sink.url},
                )
                platform = start_platform(stack, opts)
                try:
                    await _drive(platform, opts, report, in_flight, db_url, log)
                    await _audit(platform, db_url, report)
                    report.charged_notice_without_capture = await _charged_without_capture(
                        sink, db_url
                    )
                finally:
                    for service in reversed(platform.services):
                        service.stop()
        finally:
            await sink.stop()
        report.emails, report.emails_twice = len(sink.messages), sink.duplicates()
    return report


async def _drive(
    platform: Platform,
    opts: DemoOptions,
    report: Report,
    in_flight: int,
    db_url: str,
    log: bool,
) -> None:
    customers, ops_token = seed_customers(platform)
    victims = [s for s in platform.services if s.name in SCENARIOS[report.scenario]]
    fleet = next(s for s in platform.services if s.name == "vehicle_sim")
    _signal(fleet, signal.SIGSTOP)  # a quiet network: activations wait, purchases pile up
    placing = asyncio.create_task(
        place_purchases(platform.backend_url, customers, opts.concurrency, opts.seed, patience_s=60)
    )
    await _until_in_flight(platform.backend_url, ops_token, in_flight, placing, log)
    for victim in victims:
        victim.kill()
    report.in_flight_at_kill = await count_in_flight(db_url)
    _say(log, f"SIGKILL {', '.join(v.name for v in victims)}: "
              f"{report.in_flight_at_kill} purchases in flight")  # fmt: skip
    await asyncio.sleep(DOWN_S)
    for victim in victims:
        await asyncio.to_thread(victim.start)
    _signal(fleet, signal.SIGCONT)
    _say(log, "restarted, fleet awake; waiting for every purchase to settle")
    placed = await placing
    report.answers = dict(placed.answers)
    started = time.monotonic()
    report.settled = await _until_settled(platform, ops_token, db_url)
    report.settle_s = round(time.monotonic() - started, 1)


async def _until_in_flight(
    backend_url: str, ops_token: str, bar: int, placing: asyncio.Task[Any], log: bool
) -> None:
    """Until ``bar`` purchases are in flight (progress every 2 s)."""
    said, most = time.monotonic(), 0
    async with httpx.AsyncClient(base_url=backend_url, timeout=10) as http:
        while not placing.done():
            purchases = (await ops_summary(http, ops_token))["purchases_by_state"]
            now_in_flight = sum(purchases.get(s.value, 0) for s in IN_FLIGHT)
            most = max(most, now_in_flight)
            if now_in_flight >= bar:
                return
            if time.monotonic() - said > 2:
                said = time.monotonic()
                _say(log, f"{now_in_flight} in flight ({sum(purchases.values())} placed)")
            await asyncio.sleep(0.05)
    raise RuntimeError(f"at most {most} purchases in flight, never {bar}: use more --vehicles")


async def count_in_flight(db_url: str) -> int:
    async with _session(db_url) as session:
        found = await session.scalar(
            select(func.count())
            .select_from(Purchase)
            .where(Purchase.state.in_([s.value for s in IN_FLIGHT]))
        )
    return int(found or 0)


async def _until_settled(platform: Platform, ops_token: str, db_url: str) -> bool:
    """Nothing in flight, no money operation or e-mail waiting, no webhook undelivered."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        if await _pending_work(db_url) == 0 and await _webhooks_pending(platform) == 0:
            return True
        await asyncio.sleep(0.5)
    return False


async def _pending_work(db_url: str) -> int:
    waiting = (
        (Purchase, Purchase.state.in_([s.value for s in IN_FLIGHT])),
        (MoneyOp, MoneyOp.state == OpState.REQUESTED.value),
        (Notification, Notification.status == "QUEUED"),
        (Payment, and_(Payment.state == PaymentState.CHARGED.value,
                       Payment.settlement.in_(["NONE", "PENDING"]))),
    )  # fmt: skip
    async with _session(db_url) as session:
        counts = [
            await session.scalar(select(func.count()).select_from(model).where(condition))
            for model, condition in waiting
        ]
    return sum(int(c or 0) for c in counts)


async def _webhooks_pending(platform: Platform) -> int:
    stats = await _provider_stats(platform)
    return int(stats["webhooks"]["pending"])


async def _provider_stats(platform: Platform) -> dict[str, Any]:
    key = platform.env["CAAS_PAYMENT_PROVIDER_KEY"]
    async with httpx.AsyncClient(base_url=platform.paysim_url, timeout=10) as http:
        reply = await http.get("/control/stats", headers={"Authorization": f"Bearer {key}"})
        reply.raise_for_status()
        stats: dict[str, Any] = reply.json()
    return stats


async def _audit(platform: Platform, db_url: str, report: Report) -> None:
    check = run_python(["backend", "check-invariants"], platform.env)
    report.violations = [line for line in check.splitlines() if line.startswith("VIOLATION")]
    stats = await _provider_stats(platform)
    report.double_captures = int(stats["captured_more_than_once"])
    async with _session(db_url) as session:
        rows = (
            await session.execute(
                select(Purchase.state, Payment.state, Purchase.duration_model, Payment).join(
                    Payment, Payment.purchase_id == Purchase.id
                )
            )
        ).all()
    for purchase_state, payment_state, model, payment in rows:
        report.purchases_by_state[purchase_state] = (
            report.purchases_by_state.get(purchase_state, 0) + 1
        )
        report.payments_by_state[payment_state] = report.payments_by_state.get(payment_state, 0) + 1
        ended = purchase_state not in {s.value for s in IN_FLIGHT}
        if payment_state in HOLD_OPEN and ended:
            report.holds_left_open += 1
        if purchase_state == "ACTIVE" and model != "subscription" and not payment.captured_cents:
            report.active_never_charged += 1


async def _charged_without_capture(sink: SmtpSink, db_url: str) -> int:
    """Mails that told a customer they were charged, for payments never captured: the
    Message-ID names the notification row, which names the purchase."""
    ids = [m.message_id.strip("<>").split("@", 1)[0] for m in sink.messages if m.message_id]
    if not ids:
        return 0
    async with _session(db_url) as session:
        found = await session.scalar(
            select(func.count())
            .select_from(Notification)
            .join(Payment, Payment.purchase_id == Notification.purchase_id)
            .where(
                and_(
                    Notification.id.in_(ids),
                    Notification.body.contains(CHARGED_NOTICE),
                    Payment.captured_cents == 0,
                )
            )
        )
    return int(found or 0)


class _session:
    """``async with _session(url) as session``: a short-lived engine for one read."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    async def __aenter__(self) -> Any:
        self.session = make_sessions(self.engine)()
        return await self.session.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self.session.__aexit__(*exc)
        await self.engine.dispose()


def _signal(service: PythonService, sig: signal.Signals) -> None:
    assert service.proc is not None
    os.kill(service.proc.pid, sig)


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(f"money-faults: {text}", flush=True)


def run(
    scenarios: list[str],
    kind: str,
    vehicles: int,
    in_flight: int,
    concurrency: int,
    json_out: Path | None,
) -> int:
    reports = []
    for scenario in scenarios or list(SCENARIOS):
        print(f"money-faults: {scenario} on {kind}, {vehicles} vehicles", flush=True)
        report = asyncio.run(run_scenario(scenario, kind, vehicles, in_flight, concurrency))
        reports.append({**asdict(report), "ok": report.ok})
        print(json.dumps(reports[-1], indent=2), flush=True)
    if json_out is not None:
        json_out.write_text(json.dumps(reports, indent=2))
    return 0 if all(r["ok"] for r in reports) else 1
