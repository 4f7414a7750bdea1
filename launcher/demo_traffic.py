"""The demo's customers at work: purchases through the backend's public API, and a
progress view read from the backend (ops summary) and the gateway (/metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

IN_FLIGHT_PURCHASES = ("PAYMENT_PENDING", "ACTIVATION_QUEUED", "ACTIVATING")
OPEN_PAYMENTS = ("INITIATED", "PENDING", "HELD_FOR_ACTIVATION")
# subscriptions are billed monthly in arrears: nothing to capture during a demo run
DURATION_MODELS = ("temporary", "permanent")


@dataclass
class Customer:
    token: str
    vehicles: dict[str, str]  # VIN → backend vehicle id
    firmware_features: dict[str, set[str]] = field(default_factory=dict)  # VIN → installed


@dataclass
class Placed:
    """What the driver did: one row per purchase request."""

    activation_ids: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # HTTP status / error code


async def patiently(
    send: Callable[[], Awaitable[httpx.Response]], patience_s: float
) -> httpx.Response:
    """``send()`` again while the backend cannot be reached (a restart), for up to
    ``patience_s``, as a customer's app would; a purchase is resent with the same
    Idempotency-Key, so it is made once."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return await send()
        except httpx.TransportError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.5)


async def buy_one(
    http: httpx.AsyncClient,
    customer: Customer,
    vin: str,
    rng: random.Random,
    placed: Placed,
    patience_s: float = 0.0,
) -> None:
    """Buy one of the catalog's offers that this vehicle's firmware ships (the backend's
    catalog lists only those already, by its rules; the manifest's list is checked
    too, so that a rule an operator widened by mistake does not fail the demo)."""
    vehicle_id = customer.vehicles[vin]
    installed = customer.firmware_features.get(vin)
    auth = {"Authorization": f"Bearer {customer.token}"}
    catalog = await patiently(
        lambda: http.get("/v1/catalog", params={"vehicle_id": vehicle_id}, headers=auth),
        patience_s,
    )
    offers = [
        (service["id"], price)
        for service in (catalog.json().get("services", []) if catalog.is_success else [])
        for price in service["prices"]
        if price["model"] in DURATION_MODELS and (installed is None or service["id"] in installed)
    ]
    if not offers:
        placed.answers[f"catalog {catalog.status_code}"] += 1
        return
    service_id, price = rng.choice(offers)
    duration = {"model": price["model"], **({"days": price["days"]} if price["days"] else {})}
    body = {"vehicle_id": vehicle_id, "service_id": service_id, "duration": duration}
    headers = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    answer = await patiently(
        lambda: http.post("/v1/purchases", json=body, headers=headers), patience_s
    )
    placed.answers[str(answer.status_code)] += 1
    if answer.status_code == 202:
        placed.activation_ids.append(answer.json()["activation_id"])


async def place_purchases(
    backend_url: str | list[str],
    customers: list[Customer],
    concurrency: int,
    seed: int,
    patience_s: float = 0.0,
) -> Placed:
    """One purchase per vehicle, ``concurrency`` requests at a time; ``patience_s``:
    how long a request is retried while the backend cannot be reached. Several backend
    URLs: the customers are spread over them in turn (a customer's catalog read and
    purchase go to the same one)."""
    urls = [backend_url] if isinstance(backend_url, str) else backend_url
    rng = random.Random(seed)
    placed = Placed()
    gate = asyncio.Semaphore(concurrency)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
            for url in urls
        ]

        async def one(http: httpx.AsyncClient, customer: Customer, vin: str) -> None:
            async with gate:
                try:
                    await buy_one(http, customer, vin, rng, placed, patience_s)
                except httpx.HTTPError as exc:
                    placed.answers[type(exc).__name__] += 1

        work = [(c, vin) for c in customers for vin in c.vehicles]
        await asyncio.gather(
            *(one(clients[n % len(clients)], c, vin) for n, (c, vin) in enumerate(work))
        )
    return placed


# ------------------------------------------------------------------ progress
@dataclass
class Progress:
    at: float
    purchases: dict[str, int]
    payments: dict[str, int]
    open_tickets: int
    activations: dict[str, int]
    retries: int
    escalations: int

    @property
    def in_flight(self) -> int:
        purchases = sum(self.purchases.get(s, 0) for s in IN_FLIGHT_PURCHASES)
        return purchases + sum(self.payments.get(s, 0) for s in OPEN_PAYMENTS)


def gateway_counts(metrics_text: str) -> tuple[dict[str, int], int, int]:
    """Activations by state, retries scheduled and escalations from /metrics."""
    states: dict[str, int] = {}
    retries = escalations = 0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "caas_gateway_activation_states":
                states[sample.labels["state"]] = int(sample.value)
            elif (
                sample.name == "caas_gateway_attempts_total"
                and sample.labels.get("result") == "FAILED_RETRY"
            ):
                retries += int(sample.value)
            elif sample.name == "caas_gateway_escalations_total":
                escalations += int(sample.value)
    return states, retries, escalations


async def ops_summary(backend: httpx.AsyncClient, ops_token: str) -> dict[str, Any]:
    """The backend's GET /v1/ops/metrics/summary (counts by state, handbook metrics)."""
    reply = await backend.get(
        "/v1/ops/metrics/summary", headers={"Authorization": f"Bearer {ops_token}"}
    )
    summary: dict[str, Any] = reply.json()
    return summary


async def snapshot(
    backend: httpx.AsyncClient, ops_token: str, gateway: httpx.AsyncClient
) -> Progress:
    summary = await ops_summary(backend, ops_token)
    states, retries, escalations = gateway_counts((await gateway.get("/metrics")).text)
    return Progress(
        at=time.monotonic(),
        purchases=summary["purchases_by_state"],
        payments=summary["payments_by_state"],
        open_tickets=summary["open_tickets"],
        activations=states,
        retries=retries,
        escalations=escalations,
    )


def progress_line(p: Progress, elapsed_s: float) -> str:
    def fmt(counts: dict[str, int]) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)

    return (
        f"[{elapsed_s:5.0f}s] purchases[{fmt(p.purchases)}] payments[{fmt(p.payments)}] "
        f"activations[{fmt(p.activations)}] retries={p.retries} escalations={p.escalations} "
        f"tickets={p.open_tickets}"
    )


def progress_table(p: Progress, elapsed_s: float) -> Table:
    table = Table(title=f"CaaS demo, {elapsed_s:.0f}s", expand=False)
    for column in ("purchases", "payments", "gateway activations"):
        table.add_column(column)
    rows = [sorted(d.items()) for d in (p.purchases, p.payments, p.activations)]
    for i in range(max(len(r) for r in rows)):
        table.add_row(*(f"{r[i][0]} {r[i][1]}" if i < len(r) else "" for r in rows))
    table.add_row(
        f"tickets {p.open_tickets}", "", f"retries {p.retries}, escalations {p.escalations}"
    )
    return table


async def follow(
    backend_url: str, ops_token: str, gateway_url: str, timeout_s: float, live: bool
) -> Progress:
    """Show progress until nothing is in flight (or ``timeout_s``); the last snapshot."""
    started = time.monotonic()
    async with (
        httpx.AsyncClient(base_url=backend_url, timeout=10) as backend,
        httpx.AsyncClient(base_url=gateway_url, timeout=10) as gateway,
    ):
        view = (
            Live(console=Console(), refresh_per_second=2) if live and sys.stdout.isatty() else None
        )
        last_print = 0.0
        with view or contextlib.nullcontext():
            while True:
                p = await snapshot(backend, ops_token, gateway)
                elapsed = p.at - started
                if view is not None:
                    view.update(progress_table(p, elapsed))
                elif p.at - last_print >= 5:
                    print(progress_line(p, elapsed), flush=True)
                    last_print = p.at
                if p.in_flight == 0 or elapsed > timeout_s:
                    print(progress_line(p, elapsed), flush=True)
                    return p
                await asyncio.sleep(1.0)
