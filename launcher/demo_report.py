"""The demo's closing summary: outcomes by failure category, attempts, time to
activation, the handbook's six metrics against their thresholds with the breakdowns
(the backend's ``/v1/ops/metrics/summary``), and the money check."""

from __future__ import annotations

import asyncio
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

    def add(self, activation: dict[str, Any]) -> None:
        state = activation["state"]
        self.states[state] += 1
        self.attempts[len(activation.get("attempts") or [])] += 1
        if activation.get("failure_category") and state == "FAILED":
            self.categories[activation["failure_category"]] += 1
        if state == "SUCCEEDED":
            started = parse_ts(activation["created_at"])
            self.seconds_to_success.append(parse_ts(activation["updated_at"]) - started)

    def percentile_s(self, q: int) -> float:
        values = sorted(self.seconds_to_success)
        if not values:
            return 0.0
        return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


async def collect(gateway_url: str, gateway_token: str, activation_ids: list[str]) -> Outcomes:
    """Read every purchase's activation from the gateway (docs/spec.md §3 Activation)."""
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
    outcomes: Outcomes,
    summary: dict[str, Any],
    invariants_text: str,
    invariants_ok: bool,
    expected_alerts: frozenset[str] = frozenset(),
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

    timing = Table(title="Time to activation (accepted → SUCCEEDED)")
    for q in ("p50", "p90", "p99", "max"):
        timing.add_column(q, justify="right")
    timing.add_row(*(f"{outcomes.percentile_s(q):.2f} s" for q in (50, 90, 99, 100)))
    console.print(timing)

    console.print(handbook_table(summary, expected_alerts))
    console.print(breakdown_table(summary))
    tickets = summary["breakdowns"]["support_resolution"]
    console.print(
        f"Support: {tickets['open']} tickets open, {tickets['resolved']} resolved"
        + (f" (mean {tickets['mean_s']:.0f} s)" if tickets["mean_s"] is not None else "")
    )

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


def shown(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value:.1%}"
    return f"{value:.1f} s" if unit == "seconds" else f"{value:.2f}"


def handbook_table(summary: dict[str, Any], expected_alerts: frozenset[str] = frozenset()) -> Table:
    """The handbook's six metrics against their alert thresholds (the backend's summary);
    an alert the fleet mix makes on purpose is marked expected (demo_expect.py)."""
    table = Table(title="Handbook metrics (activations finished in the run)")
    for column in ("metric", "value", "alert threshold", "status", "samples", "fleet mix"):
        table.add_column(column)
    for m in summary["handbook"]:
        sign = ">" if m["alert_when"] == "above" else "<"
        value = "-" if m["value"] is None else shown(m["value"], m["unit"])
        status = "no sample" if m["value"] is None else ("ALERT" if m["alerting"] else "ok")
        threshold = f"{sign} {shown(m['threshold'], m['unit'])}"
        expected = "ALERT expected" if m["key"] in expected_alerts else ""
        table.add_row(m["name"], value, threshold, status, str(m["samples"]), expected)
    return table


def breakdown_table(summary: dict[str, Any]) -> Table:
    """Failures by reason, model, service and hour of day (the hours that had
    activations: a demo runs inside one or two); successes by attempt."""
    table = Table(title="Breakdowns")
    for column in ("breakdown", "key", "count", "of", "rate"):
        table.add_column(column)
    b = summary["breakdowns"]
    for name in ("failures_by_reason", "failures_by_model", "failures_by_service",
                 "failures_by_hour", "successes_by_attempt"):  # fmt: skip
        for row in b[name]:
            if name == "failures_by_hour" and not row["total"]:
                continue
            rate = "-" if row["rate"] is None else f"{row['rate']:.1%}"
            key = f"{row['key']}:00 UTC" if name == "failures_by_hour" else row["key"]
            table.add_row(name, key, str(row["count"]), str(row["total"]), rate)
    return table


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
