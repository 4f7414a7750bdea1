"""deploy/grafana/: the provisioned dashboard reads the provisioned data source, its
handbook panels colour at the alerts' thresholds, it names only metrics the services
export, and every panel's query runs against a real Prometheus (deploy/prometheus/
prometheus.yml and its rules) scraping the platform's real processes after a few
purchases: Prometheus accepts each query, and the panels fed by metrics that exist
today show data."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import yaml

from launcher.demo import DemoOptions, Platform, seed_customers, start_platform, stop_platform
from launcher.demo_traffic import place_purchases
from launcher.procs import free_port
from launcher.prometheus import PrometheusServer, PrometheusSettings, local_config
from launcher.stack import LocalStack
from protocol.topics import Topics
from tests.deploy import kit
from tests.gateway.conftest import next_db
from tests.helpers import eventually

# After the test's purchases every panel's queries return data, but these: no alert has
# been firing for its `for:` yet, and no ticket is resolved in the test.
MAY_BE_EMPTY = frozenset(
    {"Alerts firing by name [A]", "Ticket resolution time [A]", "Ticket resolution time [B]"}
)
STATES_PANEL = "Activations by state (gateway, now) [A]"
TIME_PANEL = "Time to activation (gateway) [B]"  # the 95th percentile
JOBS_SERVING_METRICS = ("backend", "gateway", "paysim", "vehicle_sim")

# Half the fleet answers, half refuses for a configuration conflict (a terminal answer):
# successes and escalations within seconds, no retry to wait for.
FLEET = {"name": "dashboard", "mix": {"online": 0.5, "conflict": 0.5}}
VEHICLES = 6
EVERY_S = 1  # scrape and rule evaluation interval
RATE_INTERVAL = f"{4 * EVERY_S}s"  # Grafana's $__rate_interval: four scrape intervals


# ------------------------------------------------------------------ the files
def datasource_uid() -> str:
    sources = kit.load_yaml(kit.DATASOURCES_YML)["datasources"]
    assert len(sources) == 1 and sources[0]["type"] == "prometheus"
    uid: str = sources[0]["uid"]
    return uid


def test_dashboard_reads_the_provisioned_datasource() -> None:
    board = kit.dashboard()
    uid = datasource_uid()
    assert board["uid"] == "caas-operations" and board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in kit.panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
            assert target["expr"].strip(), panel["title"]
    provider = kit.load_yaml(kit.DASHBOARD_PROVIDER_YML)["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in kit.dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_handbook_stats_colour_at_the_alert_thresholds() -> None:
    """A stat panel per handbook metric on the alert's recording rule; red past the
    threshold in the alert's direction (green from it upwards for "below")."""
    stats = {
        panel["targets"][0]["expr"]: panel
        for panel in kit.panels(kit.dashboard())
        if panel["type"] == "stat"
    }
    for key, recorded, threshold, direction in kit.HANDBOOK:
        assert recorded in stats, f"no stat panel for {key}"
        steps = stats[recorded]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        colour_at = {step["value"]: step["color"] for step in steps}
        if direction == "above":
            assert colour_at[None] == "green" and colour_at[threshold] == "red", key
        else:
            assert colour_at[None] == "red" and colour_at[threshold] == "green", key
        daily = recorded.replace("1h", "24h")
        assert daily in stats, f"no stat panel for {key} over 24 h"


def test_dashboard_reads_only_known_metrics_and_variables() -> None:
    known = kit.known_series()
    recorded = kit.recording_names()
    for query in kit.queries(kit.dashboard()):
        assert not kit.caas_series_in(query.expr) - known, query
        assert not kit.recorded_names_in(query.expr) - recorded, query
        kit.substitute(query.expr, {name: "1s" for name in kit.GRAFANA_VARIABLES})


def test_dashboard_has_the_issues_panels() -> None:
    titles = {panel["title"] for panel in kit.panels(kit.dashboard())}
    for wanted in (
        "Failures by reason",
        "Failure rate by vehicle model",
        "Failure rate by service",
        "Failures by hour of day (UTC)",
        "Successes by attempt number",
        "Time to activation (gateway)",
        "Payment to activation (backend)",
        "Escalations by failure category",
        "Payments by state",
        "Money operations per minute",
        "Event consumer lag",
        "Outbox: oldest pending row",
    ):
        assert wanted in titles, wanted


# ------------------------------------------------------------------ the live run
@contextlib.contextmanager
def platform_running(stack: LocalStack, topics: Topics, tmp_path: Path) -> Iterator[Platform]:
    """The demo's processes (simulator, gateway, paysim, backend) on this test's topic
    root and a Redis db of its own; their logs and data (SQLite) in the test's folder."""
    scenario = tmp_path / "fleet.yaml"
    scenario.write_text(yaml.safe_dump(FLEET))
    assert stack.redis is not None
    redis_url = stack.redis.url(next_db())
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()  # nothing of an earlier test's activations or events
    opts = DemoOptions(
        run_dir=tmp_path,
        vehicles=VEHICLES,
        live=False,
        scenario=scenario,
        extra_env={"CAAS_TOPIC_ROOT": topics.root, "CAAS_REDIS_URL": redis_url},
    )
    platform = start_platform(stack, opts)
    try:
        yield platform
    finally:
        stop_platform(platform)


@contextlib.contextmanager
def prometheus_scraping(platform: Platform, tmp_path: Path) -> Iterator[PrometheusServer]:
    """deploy/prometheus/prometheus.yml with its rules, every job pointed at the
    platform's process, scraping and evaluating every second."""

    def address(url: str) -> list[str]:
        return [urlsplit(url).netloc]

    targets = {
        "backend": address(platform.backend_url),
        "gateway": address(platform.gateway_url),
        "paysim": address(platform.paysim_url),
        "vehicle_sim": address(platform.simulator_url),
    }
    config = tmp_path / "prometheus.yml"
    rendered = local_config(kit.load_yaml(kit.PROMETHEUS_YML), targets, EVERY_S)
    config.write_text(yaml.safe_dump(rendered))
    server = PrometheusServer(PrometheusSettings(tmp_path / "prometheus", config, free_port()))
    server.settings.run_dir.mkdir()
    try:
        server.start()
        yield server
    finally:
        server.stop()


async def query(http: httpx.AsyncClient, expr: str, start: float, end: float) -> dict[str, Any]:
    """A range query as a time-series panel sends it; the API's answer (status and data)."""
    params = {"query": expr, "start": str(start), "end": str(end), "step": str(EVERY_S)}
    response = await http.get("/api/v1/query_range", params=params)
    body: dict[str, Any] = response.json()
    return body


def finite(answer: dict[str, Any]) -> list[float]:
    """The answer's finite points (a quantile over no observations is NaN: no data)."""
    return [
        float(value)
        for series in answer.get("data", {}).get("result", [])
        for _, value in series["values"]
        if value not in ("NaN", "+Inf", "-Inf")
    ]


def has_values(answer: dict[str, Any]) -> bool:
    return bool(finite(answer))


async def panel_answers(http: httpx.AsyncClient, since: float) -> dict[str, dict[str, Any]]:
    """Every panel query over the time range from ``since`` to now, with Grafana's
    variables as Grafana sets them for that range. The range is a whole number of steps
    long, so its last point is now."""
    end = time.time()
    seconds = math.ceil(end - since)
    variables = {
        "__rate_interval": RATE_INTERVAL,
        "__interval": f"{EVERY_S}s",
        "__range": f"{seconds}s",
    }
    return {
        q.name: await query(http, kit.substitute(q.expr, variables), end - seconds, end)
        for q in kit.queries(kit.dashboard())
    }


def empty_panels(answers: dict[str, dict[str, Any]]) -> list[str]:
    return [name for name, answer in answers.items() if not has_values(answer)]


def last_by(answer: dict[str, Any], label: str) -> dict[str, float]:
    """Each series' last value, by the value of ``label``; series at 0 are left out (the
    services create their bounded series at 0 from the start)."""
    last = {
        series["metric"].get(label, ""): float(series["values"][-1][1])
        for series in answer.get("data", {}).get("result", [])
    }
    return {key: value for key, value in last.items() if value}


async def targets(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await http.get("/api/v1/targets")).json()["data"][
        "activeTargets"
    ]
    return found


async def all_scraped(http: httpx.AsyncClient) -> bool:
    """Every job's target scraped at least once (successfully or not). Prometheus hands
    the configured targets to its scrapers a few seconds after it is ready."""
    found = await targets(http)
    jobs = {target["labels"]["job"] for target in found}
    return jobs == set(kit.JOBS) and all(target["health"] != "unknown" for target in found)


async def scrape_errors(http: httpx.AsyncClient) -> dict[str, str]:
    """Job → Prometheus's last error scraping it (for a failure message)."""
    return {t["labels"]["job"]: t["lastError"] for t in await targets(http)}


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_every_panel_query_runs_against_a_real_prometheus(
    stack: LocalStack, topics: Topics, tmp_path: Path
) -> None:
    with (
        platform_running(stack, topics, tmp_path) as platform,
        prometheus_scraping(platform, tmp_path) as prometheus,
    ):
        started = time.time()
        async with httpx.AsyncClient(base_url=prometheus.url, timeout=10) as http:
            # every target scraped once before the traffic: the counters' values before
            # it are known, so increase() and rate() count the purchases' events
            await eventually(lambda: all_scraped(http), timeout_s=10)
            customers, _ = seed_customers(platform)
            placed = await place_purchases(platform.backend_url, customers, 6, seed=1)
            assert placed.answers == {"202": VEHICLES}, placed.answers

            # the outcomes (successes and escalations) reach the panels within seconds; a
            # rate needs two scrapes after the event
            answers: dict[str, dict[str, Any]] = {}

            async def expected_panels_show_data() -> bool:
                answers.update(await panel_answers(http, started))
                states = last_by(answers[STATES_PANEL], "state")
                finished = states.get("SUCCEEDED", 0) + states.get("FAILED", 0)
                shown = not set(empty_panels(answers)) - MAY_BE_EMPTY
                return shown and finished == VEHICLES

            with contextlib.suppress(TimeoutError):
                await eventually(expected_panels_show_data, timeout_s=30, interval_s=0.5)
            refused = {name: a for name, a in answers.items() if a["status"] != "success"}
            assert not refused, refused
            empty = empty_panels(answers)
            print(f"\npanels without data: {empty}")
            missing = sorted(set(empty) - MAY_BE_EMPTY)
            assert not missing, (missing, await scrape_errors(http))
            assert set(answers) >= MAY_BE_EMPTY, "a listed panel is not there"
            # and what they show is what happened: the online half succeeded within
            # seconds, the conflicting half escalated
            states = last_by(answers[STATES_PANEL], "state")
            assert states["SUCCEEDED"] == states["FAILED"] == VEHICLES // 2, states
            assert 0 < max(finite(answers[TIME_PANEL])) < 30, answers[TIME_PANEL]
            escalated = last_by(answers["Escalations by failure category [A]"], "failure_category")
            assert set(escalated) == {"configuration_conflict"}, escalated
            for job in JOBS_SERVING_METRICS:
                now = time.time()
                up = await query(http, f'up{{job="{job}"}} == 1', now - 60, now)
                assert has_values(up), (job, await scrape_errors(http))
