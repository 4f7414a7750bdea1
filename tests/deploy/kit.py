"""What the deploy/ tests share: the files, the metric names the platform exports, the
dashboard's queries, and Grafana's variables as the tests substitute them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import Metric

from backend.domain import handbook
from gateway.metrics import GatewayMetrics
from launcher.prometheus import DEPLOY_DIR

PROMETHEUS_YML = DEPLOY_DIR / "prometheus.yml"
RECORDING_YML = DEPLOY_DIR / "rules" / "recording.yml"
ALERTS_YML = DEPLOY_DIR / "rules" / "alerts.yml"
RULE_TESTS = sorted((DEPLOY_DIR / "tests").glob("*.yml"))
GRAFANA_DIR = DEPLOY_DIR.parent / "grafana"
DASHBOARD_JSON = GRAFANA_DIR / "dashboards" / "caas-operations.json"
DATASOURCES_YML = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER_YML = GRAFANA_DIR / "provisioning" / "dashboards" / "provider.yml"

JOBS = ("backend", "gateway", "paysim", "vehicle_sim")

# The recording rule each handbook alert and stat panel reads, by the summary's key.
RECORDED = {
    "activation_failure_rate": "caas:activation_failure_ratio:rate1h",
    "first_attempt_success_rate": "caas:first_attempt_success_ratio:rate1h",
    "average_attempts_to_success": "caas:attempts_to_success:mean1h",
    "payment_to_activation_seconds": "caas:payment_to_activation_seconds:mean1h",
    "permanent_failure_rate": "caas:permanent_failure_ratio:rate1h",
    "customer_impact_rate": "caas:customer_impact_ratio:rate1h",
}
# The handbook's six, in the ops summary's order, with the summary's own thresholds and
# directions (backend/domain/handbook.py): key (the alert's `handbook` label), the
# recording rule, the threshold, its direction. A threshold changed in the backend and
# not in the rules fails the tests that read this.
HANDBOOK = tuple((d.key, RECORDED[d.key], d.threshold, d.alert_when) for d in handbook.HANDBOOK)

# The backend's metric families (docs/operations.md). Listed rather than read from a
# live backend so that this check needs no database; tests/backend/test_metrics.py
# checks that a real backend exports them.
BACKEND_GAUGES = (
    "caas_backend_purchases",
    "caas_backend_payments",
    "caas_backend_tickets",
    "caas_backend_outbox_pending",
    "caas_backend_outbox_oldest_age_seconds",
    "caas_backend_event_consumer_lag",
    "caas_backend_notifications_queued",
    "caas_backend_dependency_up",
)
BACKEND_COUNTERS = (
    "caas_backend_money_operations",
    "caas_backend_notifications",
    "caas_backend_tickets_opened",
    "caas_backend_tickets_resolved",
    "caas_backend_settlement_failures",
    "caas_backend_activation_outcomes",
    "caas_backend_activation_failures_by_hour",
    "caas_backend_activation_successes_by_attempt",
    "caas_backend_permanent_failures",
    "caas_backend_customer_impact",
)
BACKEND_HISTOGRAMS = (
    "caas_backend_ticket_resolution_seconds",
    "caas_backend_attempts_to_success",
    "caas_backend_payment_to_activation_seconds",
)
GATEWAY_ADDED = ("caas_gateway_mqtt_connected",)  # registered by the worker (watch_connected)
SIMULATOR_SERIES = (
    "caas_sim_commands_received_total",
    "caas_sim_responses_sent_total",
    "caas_sim_commands_dropped_total",
    "caas_sim_duplicate_commands_total",
    "caas_sim_vehicles",
    "caas_sim_connections",
)
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def series_names(kind: str, family: str) -> set[str]:
    """The names a family's samples carry in the text format."""
    return {family + suffix for suffix in SAMPLE_SUFFIXES.get(kind, ("",))}


def known_series() -> set[str]:
    """Every ``caas_*`` sample name the services export (docs/operations.md)."""
    names = set(BACKEND_GAUGES) | set(GATEWAY_ADDED) | set(SIMULATOR_SERIES)
    for family in BACKEND_COUNTERS:
        names |= series_names("counter", family)
    for family in BACKEND_HISTOGRAMS:
        names |= series_names("histogram", family)
    metrics = GatewayMetrics()
    metrics.store_gauges.snapshot = ({}, 0, 0)  # as the exporter lease's holder shows them
    gateway: list[Metric] = list(metrics.registry.collect())
    for metric in gateway:
        names |= series_names(metric.type, metric.name)
    return names


# a caas_ name that is not part of a recording rule's name (those hold colons)
_CAAS_SERIES = re.compile(r"(?<![\w:])caas_[a-z0-9_]+(?![\w:])")
_RECORDED = re.compile(r"(?<![\w:])[a-z_]+:[a-z0-9_]+:[a-z0-9_]+(?![\w:])")


def caas_series_in(expr: str) -> set[str]:
    return set(_CAAS_SERIES.findall(expr))


def recorded_names_in(expr: str) -> set[str]:
    return set(_RECORDED.findall(expr))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules(ALERTS_YML)}


def recording_names() -> set[str]:
    return {rule["record"] for rule in rules(RECORDING_YML)}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_JSON.read_text())
    return loaded


@dataclass(frozen=True)
class Query:
    panel: str  # the panel's title
    ref: str  # the target's refId
    expr: str  # as written in the dashboard (with Grafana's variables)

    @property
    def name(self) -> str:
        return f"{self.panel} [{self.ref}]"


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' (collapsed) children included, rows themselves left out."""
    found = []
    for panel in board["panels"]:
        found.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def queries(board: dict[str, Any]) -> list[Query]:
    return [
        Query(panel["title"], target["refId"], target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


# Grafana's built-in variables the dashboard may use; any other `$` is an error (the
# dashboard defines no variables of its own).
GRAFANA_VARIABLES = ("__rate_interval", "__range", "__interval")


def substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with ``$name`` / ``${name}`` replaced as Grafana would; KeyError for a
    variable not in ``values``."""

    def one(match: re.Match[str]) -> str:
        return values[match.group(1) or match.group(2)]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)
