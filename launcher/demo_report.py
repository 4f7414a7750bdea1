"""The demo's closing summary: outcomes by failure category, attempts, time to
activation, the handbook metrics against their thresholds, and the money check."""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from protocol.timeutil import parse_ts


@dataclass
class Outcomes:
    states: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    attempts: Counter[int] = field(default_factory=Counter)  # attempts used → activations
    seconds_to_success: list[float] = field(default_factory=list)
    first_attempt_successes: int = 0

    def add(self, activation: dict[str, Any]) -> None:
        state = activation["state"]
        self.states[state] += 1
        self.attempts[len(activation.get("attempts") or [])] += 1
        if activation.get("failure_category") and state == "FAILED":
            self.categories[activation["failure_category"]] += 1
        if state == "SUCCEEDED":
            started = parse_ts(activation["created_at"])
            self.seconds_to_success.append(parse_ts(activation["updated_at"]) - started)
            if len(activation.get("attempts") or []) == 1:
                self.first_attempt_successes += 1

    def percentile_s(self, q: int) -> float:
        values = sorted(self.seconds_to_success)
        if not values:
            return 0.0
        return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


async def collect(gateway_url: str, gateway_token: str, activation_ids: list[str]) -> Outcomes:
    """Read every purchase's activation from the gateway (SPEC §3 Activation)."""
    outcomes = Outcomes()
    gate = asyncio.Semaphore(32)
    headers = {"Authorization": f"Bearer {gateway_token}"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10, headers=headers) as gateway:

        async def one(activation_id: str) -> None:
            async with gate:
                reply = await gateway.get(f"/v1/activations/{activation_id}")
                if reply.status_code == 200:
                    outcomes.add(reply.json())

        await asyncio.gather(*(one(a) for a in activation_ids))
    return outcomes


def render(
    outcomes: Outcomes, summary: dict[str, Any], invariants_text: str, invariants_ok: bool
) -> None:
    console = Console()
    results = Table(title="Activations (gateway)")
    results.add_column("outcome")
    results.add_column("count", justify="right")
    for state, n in sorted(outcomes.states.items()):
        results.add_row(state, str(n))
    for category, n in sorted(outcomes.categories.items()):
        results.add_row(f"  FAILED: {category}", str(n))
    console.print(results)

    attempts = Table(title="Attempts used per activation")
    attempts.add_column("attempts")
    attempts.add_column("activations", justify="right")
    for n, count in sorted(outcomes.attempts.items()):
        attempts.add_row(str(n), str(count))
    console.print(attempts)

    done = sum(outcomes.states.values()) or 1
    timing = Table(title="Time to activation (accepted → SUCCEEDED)")
    for q in ("p50", "p90", "p99", "max"):
        timing.add_column(q, justify="right")
    timing.add_row(*(f"{outcomes.percentile_s(q):.2f} s" for q in (50, 90, 99, 100)))
    console.print(timing)

    metrics = Table(title="Handbook metrics")
    for column in ("metric", "value", "alert threshold", "status"):
        metrics.add_column(column)
    rate = summary["activation_failure_rate"]
    metrics.add_row(
        "activation failure rate",
        f"{rate['value']:.1%}",
        f"> {rate['alert_above']:.0%}",
        "ALERT" if rate["alerting"] else "ok",
    )
    metrics.add_row(
        "first-attempt success",
        f"{outcomes.first_attempt_successes / done:.1%}",
        "(informational)",
        "",
    )
    mean = statistics.fmean(outcomes.seconds_to_success) if outcomes.seconds_to_success else 0
    metrics.add_row("mean time to activation", f"{mean:.2f} s", "(informational)", "")
    metrics.add_row("open support tickets", str(summary["open_tickets"]), "", "")
    console.print(metrics)

    money = Table(title="Money")
    money.add_column("purchases by state")
    money.add_column("payments by state")
    purchases = sorted(summary["purchases_by_state"].items())
    payments = sorted(summary["payments_by_state"].items())
    for i in range(max(len(purchases), len(payments))):
        money.add_row(
            *(f"{r[i][0]} {r[i][1]}" if i < len(r) else "" for r in (purchases, payments))
        )
    console.print(money)
    verdict = "[green]HOLD[/green]" if invariants_ok else "[red]VIOLATED[/red]"
    console.print(f"Money invariants {verdict}: {invariants_text.strip()}")


def render_provider(stats: dict[str, Any]) -> None:
    """The payment provider's own count (``GET /control/stats`` of paysim)."""
    console = Console()
    table = Table(title="Payment provider (paysim)")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("captures that took money", str(sum(stats["real_captures"].values())))
    twice = stats["captured_more_than_once"]
    table.add_row("payments captured more than once", str(twice) if not twice else f"[red]{twice}")
    table.add_row("authorizations still open", str(stats["open_authorizations"]))
    webhooks = stats["webhooks"]
    table.add_row(
        "webhooks delivered / pending", f"{webhooks['delivered']} / {webhooks['pending']}"
    )
    for op, n in sorted(stats["calls"].items()):
        table.add_row(f"  calls: {op}", str(n))
    console.print(table)
