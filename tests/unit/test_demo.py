"""The demo explains itself: the share of its fleet failing on purpose and the handbook
alerts it therefore expects (marked in the closing table), where to look next; its
customers file is private."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from launcher.demo import FLEET_SCENARIO, LOGS, Platform, where_next
from launcher.demo_expect import explain, forecast
from launcher.demo_report import handbook_table
from vehicle_sim.fleet import Mode
from vehicle_sim.scenario import Scenario, load_scenario

DEMO_ALERTS = {"activation_failure_rate", "first_attempt_success_rate", "customer_impact_rate"}


def test_the_demo_fleet_forecasts_its_alerts() -> None:
    """nack, timeout, conflict and the off-line half that never returns fail on purpose
    (14 %): failure rate, first-attempt success and customer impact alert; an all-online
    fleet expects no alert."""
    f = forecast(load_scenario(FLEET_SCENARIO))
    assert {m: round(s, 3) for m, s in f.failing.items()} == {
        Mode.NACK: 0.03, Mode.TIMEOUT: 0.04, Mode.CONFLICT: 0.04, Mode.OFFLINE: 0.03,
    }  # fmt: skip
    assert round(f.failure_share, 3) == 0.14 and round(f.not_online, 2) == 0.38
    assert f.expected_alerts == DEMO_ALERTS
    lines = explain(f)
    assert lines[0].startswith("demo: 14% of the fleet fails on purpose: ")
    assert "timeout (never answers) 4%" in lines[0]
    assert "Activation failure rate ~14.0% (> 5.0%)" in lines[-1] and "ALERT" in lines[-1]
    assert "First-attempt success rate at most 86.0% (< 95.0%)" in lines[-1]
    calm = forecast(Scenario(mix={Mode.ONLINE: 1.0}))
    assert calm.expected_alerts == frozenset() and calm.failure_share == 0
    assert explain(calm)[-1] == "demo: no handbook alert is expected from this fleet"


def test_handbook_table_marks_the_expected_alerts() -> None:
    """Next to each handbook metric: "ALERT expected" for the alerts the mix causes."""
    rows = [
        {"key": key, "name": key, "unit": "ratio", "value": 0.5, "threshold": 0.05,
         "alert_when": "above", "alerting": True, "samples": 10}
        for key in ("activation_failure_rate", "permanent_failure_rate")
    ]  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=200).print(handbook_table({"handbook": rows}, frozenset(DEMO_ALERTS)))
    lines = {
        line.split("│")[1].strip(): line for line in out.getvalue().splitlines() if "│" in line
    }
    assert "ALERT expected" in lines["activation_failure_rate"]
    assert "ALERT expected" not in lines["permanent_failure_rate"]


def platform(tmp_path: Path) -> Platform:
    env = {"CAAS_GATEWAY_TOKEN": "gw-token", "CAAS_DATABASE_URL": "sqlite:///x"}
    urls = ("http://b:1", "http://g:2", "http://p:3", "http://s:4")
    return Platform(tmp_path, env, urls[1], urls[0], urls[2], urls[3], [])


def test_where_next(tmp_path: Path) -> None:
    """Running: the console with the ops token and operator, /me/, every service's /docs
    and /metrics, the logs, customers.json. Stopped: how to keep them up; logs and file."""
    text = where_next(platform(tmp_path), "ops-token", running=True)
    for wanted in (
        "http://b:1/ops/", "demo-operator", "ops-token", "http://b:1/me/",
        *(f"{u}/docs" for u in ("http://b:1", "http://g:2", "http://p:3", "http://s:4")),
        *(f"{u}/metrics" for u in ("http://b:1", "http://g:2", "http://p:3", "http://s:4")),
        *(str(tmp_path / log) for log in LOGS), str(tmp_path / "customers.json"),
    ):  # fmt: skip
        assert wanted in text, wanted
    stopped = where_next(platform(tmp_path), "ops-token", running=False)
    assert "--keep-running" in stopped and "ops-token" not in stopped
    assert all(str(tmp_path / log) in stopped for log in (*LOGS, "customers.json"))
