"""Prometheus metrics of the backend (``caas_backend_*``), served at ``GET /metrics``.

Every ``Backend`` has a registry of its own (two in one test process do not mix), with
the standard ``process_*`` and ``python_*`` collectors. Two kinds of series:

* **Counters and histograms**, per process: incremented where the thing happens, once
  its transaction committed (a decision rolled back is not counted). Prometheus sums
  the processes. The unit of work hands its ``Observation``s over after the commit
  (``store/unit_of_work.py``); the workers count their own calls.
* **Gauges read from the database and Redis at scrape time** (``StoreSnapshot``):
  the same for every process, so only the process holding the ``metrics`` lease
  exports them (``store/gauges.py``) and ``sum()`` over processes counts each row once.
  The others export none of them (absent, not zero).

Label values are bounded: reasons from ``domain.handbook.REASONS`` (else ``other``),
vehicle models and services the first ``LABEL_LIMIT`` seen (then ``other``), attempts
``1``..``9``, ``10+``, hours ``00``..``23``; never an id, a VIN or a customer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backend.domain.catalog import Catalog
from backend.domain.handbook import (
    ATTEMPT_LABELS,
    HOURS,
    REASONS,
    attempt_label,
    hour_label,
    reason_label,
)
from backend.domain.states import (
    ActivationOutcome,
    OpKind,
    PaymentMethod,
    PaymentState,
    PurchaseState,
)
from protocol.labels import BoundedLabel

ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10)
WAIT_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
RESOLUTION_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800)
LABEL_LIMIT = 64  # distinct vehicle models (services) per process; later ones are "other"
MONEY_OUTCOMES = ("succeeded", "failed", "retry")
TICKET_STATUSES = ("OPEN", "RESOLVED")
# the tickets the purchase machine opens (domain/machine.py) and the settlement watchdog's
TICKET_KINDS = (
    "activation_failed", "capture_failed", "release_failed", "deactivation_failed",
    "subscription_charge_failed", "settlement_failed",
)  # fmt: skip


# ---------------------------------------------------------------- what a commit observed
@dataclass(frozen=True)
class ActivationFinished:
    """A purchase's activation outcome was decided (``purchases.activation_outcome``)."""

    outcome: str  # succeeded | failed
    reason: str | None  # the failure category (None on success)
    model: str  # the vehicle's model
    service: str
    attempts: int | None
    at: float
    waited_s: float | None = None  # payment → activation (successes whose payment is known)
    money_taken: bool = False  # money had been taken when it failed (a direct debit)


@dataclass(frozen=True)
class TicketOpened:
    kind: str


@dataclass(frozen=True)
class TicketResolved:
    resolution: str  # manual_activation | permanent_failure
    seconds: float


@dataclass(frozen=True)
class SettlementFailed:
    """The provider could not settle money already captured or charged."""


Observation = ActivationFinished | TicketOpened | TicketResolved | SettlementFailed


# ---------------------------------------------------------------- read at scrape time
@dataclass(frozen=True)
class StoreSnapshot:
    purchases: Mapping[str, int] = field(default_factory=dict)  # by state
    payments: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (state, method)
    tickets: Mapping[str, int] = field(default_factory=dict)  # by status
    outbox_pending: int = 0
    outbox_oldest_age_s: float = 0.0
    notifications_queued: int = 0
    consumer_lag: int | None = None  # None: no Redis, or Redis could not tell


class StoreGauges(Collector):
    """The lease holder's snapshot as gauges; nothing when this process does not hold
    the lease (``snapshot`` None). Every known state is exported, zero when empty."""

    def __init__(self) -> None:
        self.snapshot: StoreSnapshot | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        if s is None:
            return
        yield _labelled(
            "caas_backend_purchases", "Purchases by state (from the database)", ["state"],
            {(state.value,): s.purchases.get(state.value, 0) for state in PurchaseState}.items(),
        )  # fmt: skip
        payments = {(p.value, m.value): 0 for p in PaymentState for m in PaymentMethod}
        payments.update(s.payments)
        yield _labelled(
            "caas_backend_payments", "Payments by state and method (from the database)",
            ["state", "method"], payments.items(),
        )  # fmt: skip
        yield _labelled(
            "caas_backend_tickets", "Support tickets by status (from the database)", ["status"],
            {(status,): s.tickets.get(status, 0) for status in TICKET_STATUSES}.items(),
        )  # fmt: skip
        yield _single(
            "caas_backend_outbox_pending", "Gateway requests not yet delivered", s.outbox_pending
        )
        yield _single(
            "caas_backend_outbox_oldest_age_seconds",
            "How long the oldest due, undelivered gateway request has waited (0: none)",
            s.outbox_oldest_age_s,
        )
        yield _single(
            "caas_backend_notifications_queued", "Notifications waiting to be sent",
            s.notifications_queued,
        )  # fmt: skip
        if s.consumer_lag is not None:
            yield _single(
                "caas_backend_event_consumer_lag",
                "Entries of the gateway events stream the backend's group has not read yet",
                s.consumer_lag,
            )


def _single(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(
    name: str, doc: str, labels: list[str], values: Iterable[tuple[tuple[str, ...], int]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values):
        family.add_metric(list(key), value)
    return family


# ---------------------------------------------------------------- the instruments
class BackendMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.store = StoreGauges()
        r.register(self.store)
        self.model_label, self.service_label = BoundedLabel(LABEL_LIMIT), BoundedLabel(LABEL_LIMIT)
        self.money_ops = Counter(
            "caas_backend_money_operations_total",
            "Payment provider operations by kind and outcome (retry: outcome unknown, asked "
            "again later with the same key)", ["kind", "outcome"], registry=r,
        )  # fmt: skip
        self.notifications = Counter(
            "caas_backend_notifications_total", "Notifications by channel and outcome",
            ["channel", "outcome"], registry=r,
        )  # fmt: skip
        self.tickets_opened = Counter(
            "caas_backend_tickets_opened_total", "Support tickets opened, by kind", ["kind"],
            registry=r,
        )  # fmt: skip
        self.tickets_resolved = Counter(
            "caas_backend_tickets_resolved_total", "Support tickets resolved, by resolution",
            ["resolution"], registry=r,
        )  # fmt: skip
        self.resolution_time = Histogram(
            "caas_backend_ticket_resolution_seconds", "Ticket opened → resolved",
            buckets=RESOLUTION_BUCKETS, registry=r,
        )  # fmt: skip
        self.settlement_failures = Counter(
            "caas_backend_settlement_failures_total", "Settlements the provider reported failed",
            registry=r,
        )  # fmt: skip
        self.outcomes = Counter(
            "caas_backend_activation_outcomes_total",
            "Finished activations by outcome, failure reason (none on success), vehicle "
            "model and service", ["outcome", "reason", "model", "service"], registry=r,
        )  # fmt: skip
        self.failures_by_hour = Counter(
            "caas_backend_activation_failures_by_hour_total",
            "Failed activations by UTC hour of day", ["hour"], registry=r,
        )  # fmt: skip
        self.successes_by_attempt = Counter(
            "caas_backend_activation_successes_by_attempt_total",
            "Succeeded activations by the attempt that succeeded", ["attempt"], registry=r,
        )  # fmt: skip
        self.attempts_to_success = Histogram(
            "caas_backend_attempts_to_success", "Attempts a succeeded activation needed",
            buckets=ATTEMPT_BUCKETS, registry=r,
        )  # fmt: skip
        self.payment_to_activation = Histogram(
            "caas_backend_payment_to_activation_seconds",
            "Payment (hold or charge; a scheduled purchase: its start) → activation",
            buckets=WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.permanent_failures = Counter(
            "caas_backend_permanent_failures_total",
            "Purchases support closed as a permanent failure", registry=r,
        )  # fmt: skip
        self.customer_impact = Counter(
            "caas_backend_customer_impact_total",
            "Activation failures after money had been taken (a direct debit)", registry=r,
        )  # fmt: skip
        self.dependencies = Gauge(
            "caas_backend_dependency_up",
            "1 when the last call to the dependency succeeded, 0 when it failed",
            ["dependency"], registry=r,
        )  # fmt: skip
        self._zeros()

    def _zeros(self) -> None:
        """Series that exist from the start (a rate over them is 0, not absent)."""
        for kind in OpKind:
            for outcome in MONEY_OUTCOMES:
                self.money_ops.labels(kind.value, outcome)
        for hour in HOURS:
            self.failures_by_hour.labels(hour)
        for attempt in ATTEMPT_LABELS:
            self.successes_by_attempt.labels(attempt)
        for resolution in ("manual_activation", "permanent_failure"):
            self.tickets_resolved.labels(resolution)
        for ticket_kind in TICKET_KINDS:
            self.tickets_opened.labels(ticket_kind)

    def expect(self, catalog: Catalog) -> None:
        """Create the outcome series of every (model, service) the catalog sells at 0,
        before any activation: Prometheus cannot count a series' first increment (a
        rate needs two samples), so the first outcomes of a (reason, model, service)
        would otherwise never reach a rate, a recording rule or an alert. The rules
        name the models (a purchase outside them is refused), so no fleet scan."""
        for service in catalog.services:
            for rule in service.applies_to:
                model, sold = self.model_label(rule.model), self.service_label(service.id)
                self.outcomes.labels("succeeded", "none", model, sold)
                for reason in sorted(REASONS):
                    self.outcomes.labels("failed", reason, model, sold)

    # ------------------------------------------------------------ recording
    def observe(self, observations: Iterable[Observation]) -> None:
        """What a committed transaction did."""
        for seen in observations:
            match seen:
                case ActivationFinished():
                    self._activation(seen)
                case TicketOpened(kind=kind):
                    self.tickets_opened.labels(kind).inc()
                case TicketResolved(resolution=resolution, seconds=seconds):
                    self.tickets_resolved.labels(resolution).inc()
                    self.resolution_time.observe(max(0.0, seconds))
                    if resolution == "permanent_failure":
                        self.permanent_failures.inc()
                case SettlementFailed():
                    self.settlement_failures.inc()

    def _activation(self, a: ActivationFinished) -> None:
        succeeded = a.outcome == ActivationOutcome.SUCCEEDED
        reason = "none" if succeeded else reason_label(a.reason)
        model, service = self.model_label(a.model), self.service_label(a.service)
        self.outcomes.labels(a.outcome, reason, model, service).inc()
        if not succeeded:
            self.failures_by_hour.labels(hour_label(a.at)).inc()
            if a.money_taken:
                self.customer_impact.inc()
            return
        if a.attempts is not None and a.attempts >= 1:
            self.successes_by_attempt.labels(attempt_label(a.attempts)).inc()
            self.attempts_to_success.observe(a.attempts)
        if a.waited_s is not None:
            self.payment_to_activation.observe(max(0.0, a.waited_s))

    def money(self, kind: str, outcome: str) -> None:
        self.money_ops.labels(kind, outcome).inc()

    def notification(self, channel: str, outcome: str) -> None:
        self.notifications.labels(channel, outcome).inc()

    def dependency(self, name: str) -> Callable[[bool], None]:
        """What an adapter calls after each call to ``name``: True when it answered."""
        gauge = self.dependencies.labels(name)
        return lambda up: gauge.set(1 if up else 0)

    # ------------------------------------------------------------ exposition
    def render(self, snapshot: StoreSnapshot | None) -> bytes:
        """The text exposition, with the store's gauges when ``snapshot`` is given (this
        process holds the lease)."""
        self.store.snapshot = snapshot  # no await before the read below: one scrape's view
        return generate_latest(self.registry)
