"""Prometheus view of the provider (``GET /metrics``, no key, like every service's).

    caas_paysim_requests_total{route, outcome}   API calls as answered: route is the
        operation (authorize, capture, cancel, charge, refund, payment), outcome one of
        succeeded (2xx), declined (402), refused (another 4xx), timeout (504), error
    caas_paysim_open_authorizations              holds neither captured nor cancelled
    caas_paysim_webhooks{state}                  pending | delivered (from the store)

plus the standard ``process_*`` and ``python_*``. Labels come from fixed sets: never a
payment id, reference or idempotency key. One registry per app (tests build many).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from paysim.store import Store

ROUTES = ("authorize", "capture", "cancel", "charge", "refund", "payment")


def outcome_of(status: int) -> str:
    if status < 300:
        return "succeeded"
    if status == 402:
        return "declined"
    if status == 504:
        return "timeout"
    return "refused" if status < 500 else "error"


class _StoreView(Collector):
    """Read from the provider's database at scrape time (the hot path pays nothing)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "caas_paysim_open_authorizations",
            "Holds neither captured nor cancelled",
            value=self.store.open_authorizations(),
        )
        hooks = GaugeMetricFamily("caas_paysim_webhooks", "Webhooks by state", labels=["state"])
        for state, n in self.store.webhook_counts().items():
            hooks.add_metric([state], n)
        yield hooks


class PaysimMetrics:
    def __init__(self, store: Store) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "caas_paysim_requests", "API calls by route and outcome", ["route", "outcome"],
            registry=r,
        )  # fmt: skip
        r.register(_StoreView(store))

    def answered(self, route: str, status: int) -> None:
        self.requests.labels(route if route in ROUTES else "other", outcome_of(status)).inc()
