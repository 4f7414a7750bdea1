"""Prometheus metrics of the gateway (``caas_gateway_*``). Labels never carry a VIN
or an id: their values come from fixed sets, or from ``BoundedLabel``.

Per-process counters and histograms (each worker exposes its own; Prometheus sums),
gauges read from Redis at scrape time (activations per state, scheduled and leased
timers), exported only by the worker holding the exporter lease (``exporter.py``) so
that their sum over workers is right, and the standard ``process_*`` / ``python_*``
metrics of the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.activation import Activation, AttemptResult, FailureCategory, State
from gateway.events import Step
from protocol.labels import BoundedLabel

ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20)
TIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 14400)
RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
AGE_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 3600, 86400)
FEATURE_LABELS = 100  # distinct feature label values per worker; later ones are "other"


class _ReadValue(Collector):
    """A counter or gauge whose value lives elsewhere (read at scrape time)."""

    def __init__(self, name: str, doc: str, read: Callable[[], int], gauge: bool) -> None:
        self.name = name
        self.doc = doc
        self.read = read
        self.gauge = gauge

    def collect(self) -> Iterable[Metric]:
        family_type = GaugeMetricFamily if self.gauge else CounterMetricFamily
        family = family_type(self.name, self.doc)
        family.add_metric([], self.read())
        yield family


class StoreGauges(Collector):
    """The gauges read from Redis, exported only while ``snapshot`` is set: by the one
    worker holding the exporter lease, as of its last scrape."""

    def __init__(self) -> None:
        self.snapshot: tuple[dict[str, int], int, int] | None = None

    def collect(self) -> Iterable[Metric]:
        if self.snapshot is None:
            return
        states, timers, leases = self.snapshot
        by_state = GaugeMetricFamily(
            "caas_gateway_activation_states", "Activations per state (from Redis)", labels=["state"]
        )
        for state in State:
            by_state.add_metric([state.value], states.get(state.value, 0))
        yield by_state
        yield GaugeMetricFamily(
            "caas_gateway_in_flight", "Activations IN_PROGRESS (from Redis)",
            value=states.get(State.IN_PROGRESS.value, 0),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "caas_gateway_scheduled_timers", "Due timers waiting (from Redis)", value=timers
        )
        yield GaugeMetricFamily(
            "caas_gateway_leased_timers", "Due timers held by a worker (from Redis)", value=leases
        )


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # the process's own metrics (CPU, memory, file descriptors, GC, Python version):
        # the default registry has them; a registry of our own must add them
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.attempts = Counter(
            "caas_gateway_attempts_total", "Attempts by result and reason",
            ["result", "reason"], registry=r,
        )  # fmt: skip
        self.finished = Counter(
            "caas_gateway_activations_total", "Activations by final state and failure category",
            ["state", "failure_category", "feature"], registry=r,
        )  # fmt: skip
        self.first_try = Counter(
            "caas_gateway_first_attempt_successes_total", "Activations that succeeded first try",
            registry=r,
        )  # fmt: skip
        self.first_ratio = Gauge(
            "caas_gateway_first_attempt_success_ratio",
            "First-attempt successes / finished activations (this worker)", registry=r,
        )  # fmt: skip
        self.attempts_to_success = Histogram(
            "caas_gateway_attempts_to_success", "Attempts an activation needed to succeed",
            buckets=ATTEMPT_BUCKETS, registry=r,
        )  # fmt: skip
        self.time_to_activation = Histogram(
            "caas_gateway_time_to_activation_seconds", "Accepted → SUCCEEDED",
            buckets=TIME_BUCKETS, registry=r,
        )  # fmt: skip
        self.escalations = Counter(
            "caas_gateway_escalations_total", "Activations FAILED (escalated) by category",
            ["failure_category"], registry=r,
        )  # fmt: skip
        for category in FailureCategory:  # at 0 from the start: a rate sees the first one
            self.escalations.labels(category.value)
        self.commands = Counter(
            "caas_gateway_commands_sent_total", "Commands published by type", ["type"], registry=r
        )
        self.responses = Counter(
            "caas_gateway_responses_total",
            "Inbound responses by outcome (matched, unknown, malformed, query)",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.rtt = Histogram(
            "caas_gateway_command_rtt_seconds", "Command → response round trip", ["type"],
            buckets=RTT_BUCKETS, registry=r,
        )  # fmt: skip
        self.twin_updates = Counter(
            "caas_gateway_twin_updates_total", "Vehicle messages by kind and outcome",
            ["kind", "outcome"], registry=r,
        )  # fmt: skip
        self.twin_age = Histogram(
            "caas_gateway_twin_age_seconds", "Twin freshness when a state message arrives",
            buckets=AGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.divergences = Counter(
            "caas_gateway_divergences_total", "Features found active without a SUCCEEDED "
            "activation", registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "caas_gateway_inbound_rejected_total",
            "Vehicle messages refused at the edge, by topic leaf and reason",
            ["leaf", "reason"], registry=r,
        )  # fmt: skip
        self.divergences_limited = Counter(
            "caas_gateway_divergences_limited",
            "Divergences not acted on: the vehicle's reconciliation rate limit was reached",
            registry=r,
        )  # fmt: skip
        self.conflicts = Counter(
            "caas_gateway_transition_conflicts_total", "Optimistic commits that lost a race",
            registry=r,
        )  # fmt: skip
        self.store_gauges = StoreGauges()
        r.register(self.store_gauges)
        self.feature_label = BoundedLabel(FEATURE_LABELS)
        self._finished_count = 0
        self._read_values: dict[str, _ReadValue] = {}
        self._first_count = 0

    def watch_reconnects(self, read: Callable[[], int]) -> None:
        self._watch("caas_gateway_mqtt_reconnects", "MQTT reconnects of this worker", read)

    def watch_connected(self, read: Callable[[], bool]) -> None:
        self._watch(
            "caas_gateway_mqtt_connected", "1 while this worker's MQTT session is up, else 0",
            lambda: int(read()), gauge=True,
        )  # fmt: skip

    def watch_backlog(self, read_bytes: Callable[[], int], read_pauses: Callable[[], int]) -> None:
        self._watch(
            "caas_gateway_inbound_backlog_bytes", "Vehicle messages read, not yet handled",
            read_bytes, gauge=True,
        )  # fmt: skip
        self._watch(
            "caas_gateway_inbound_pauses", "Times the worker stopped reading MQTT (backlog full)",
            read_pauses,
        )  # fmt: skip

    def watch_send_failures(self, read: Callable[[], int]) -> None:
        self._watch(
            "caas_gateway_command_send_failures",
            "Commands that could not be handed to the broker (their ack timeout recovers them)",
            read,
        )  # fmt: skip

    def watch_pipeline(self, calls: Callable[[], int], batches: Callable[[], int]) -> None:
        """calls / pipelines = the mean number of scripts sent per Redis round trip."""
        self._watch("caas_gateway_redis_script_calls", "Store script calls", calls)
        self._watch("caas_gateway_redis_pipelines", "Pipelines those calls went in", batches)

    def _watch(self, name: str, doc: str, read: Callable[[], int], gauge: bool = False) -> None:
        if name in self._read_values:
            self.registry.unregister(self._read_values[name])
        self._read_values[name] = _ReadValue(name, doc, read, gauge)
        self.registry.register(self._read_values[name])

    # -------------------------------------------------------------- engine observer
    def on_step(self, before: Activation, step: Step, now: float) -> None:
        act = step.activation
        for send in step.sends:
            self.commands.labels(send.type.value).inc()
        done = [a for a in act.attempts if a.result is not None]
        seen = {a.n for a in before.attempts if a.result is not None}
        for attempt in done:
            if attempt.n not in seen:
                reason = attempt.reason or attempt.response_code or "none"
                self.attempts.labels(attempt.result.value if attempt.result else "", reason).inc()
        if act.terminal and not before.terminal:
            self._finished(act, now)

    def _finished(self, act: Activation, now: float) -> None:
        category = act.failure_category.value if act.failure_category else ""
        self.finished.labels(act.state.value, category, self.feature_label(act.feature)).inc()
        self._finished_count += 1
        if act.state is State.SUCCEEDED:
            self.attempts_to_success.observe(max(1, act.current))
            self.time_to_activation.observe(max(0.0, now - act.created_at))
            first = act.attempts[:1]
            if act.current == 1 and first and first[0].result is AttemptResult.SUCCESS:
                self._first_count += 1
                self.first_try.inc()
        elif act.state is State.FAILED:
            self.escalations.labels(category).inc()
        self.first_ratio.set(self._first_count / self._finished_count)

    def on_conflict(self) -> None:
        self.conflicts.inc()

    def set_gauges(self, snapshot: tuple[dict[str, int], int, int] | None) -> None:
        """(activations per state, scheduled timers, leased timers) as just read from
        Redis by the exporting worker; None: this worker does not export them."""
        self.store_gauges.snapshot = snapshot
