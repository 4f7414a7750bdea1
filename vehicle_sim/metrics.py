"""Prometheus view of the simulator (``GET /metrics`` on the control port).

Read from the runtime's plain counters at scrape time, so the hot path pays nothing.
Labels are bounded: command type, answer, drop reason, mode. Never a VIN. Plus the
standard ``process_*`` and ``python_*`` metrics of the simulator's process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from vehicle_sim.runtime import FleetRuntime


class SimCollector(Collector):
    def __init__(self, runtime: FleetRuntime, connected: Callable[[], int]) -> None:
        self.runtime = runtime
        self.connected = connected

    def collect(self) -> Iterator[Metric]:
        stats = self.runtime.stats
        received = CounterMetricFamily(
            "caas_sim_commands_received", "Commands received", labels=["type"]
        )
        for ctype, n in stats.received.items():
            received.add_metric([ctype], n)
        yield received
        answers = CounterMetricFamily(
            "caas_sim_responses_sent", "Responses published", labels=["status", "reason"]
        )
        for label, n in stats.answered.items():
            status, _, reason = label.partition("/")
            answers.add_metric([status, reason], n)
        yield answers
        dropped = CounterMetricFamily(
            "caas_sim_commands_dropped", "Commands not answered", labels=["why"]
        )
        for why, n in stats.dropped.items():
            dropped.add_metric([why], n)
        yield dropped
        yield CounterMetricFamily(
            "caas_sim_duplicate_commands", "Duplicate command_ids seen", value=stats.duplicates
        )
        modes = GaugeMetricFamily("caas_sim_vehicles", "Vehicles by mode", labels=["mode"])
        for mode, n in self.runtime.mode_counts().items():
            modes.add_metric([mode], n)
        yield modes
        yield GaugeMetricFamily(
            "caas_sim_connections", "MQTT connections up", value=self.connected()
        )


def registry_for(runtime: FleetRuntime, connected: Callable[[], int]) -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(SimCollector(runtime, connected))
    return registry
