"""deploy/prometheus/: promtool accepts the scrape configuration and the rule files, and
its unit tests (deploy/prometheus/tests/*.yml) pass; those tests cover every alert, and
every handbook alert both fires and stays silent in them. The rules read only metrics
the services export, and the six handbook alerts match the ops summary's thresholds.

promtool comes with Debian's `prometheus` package (scripts/setup.sh installs it); a
machine without it fails here with that instruction, it does not skip."""

from __future__ import annotations

import re
import subprocess

import pytest

from launcher.prometheus import local_config, promtool
from tests.deploy import kit


def passed(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and "FAILED" not in result.stdout + result.stderr


def test_promtool_accepts_the_scrape_configuration() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert passed(result), result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_promtool_accepts_the_rule_files() -> None:
    result = promtool("check", "rules", "rules/recording.yml", "rules/alerts.yml")
    assert passed(result), result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    """The synthetic-series tests: six handbook alerts, platform health, recorded values."""
    files = [path.name for path in kit.RULE_TESTS]
    assert files == ["handbook.yml", "platform.yml", "recording.yml"]
    result = promtool("test", "rules", *(str(path) for path in kit.RULE_TESTS))
    assert passed(result), result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(kit.RULE_TESTS), result.stdout


def alert_expectations() -> dict[str, set[bool]]:
    """Alert name → whether the unit tests expect it firing (True) and/or silent (False)."""
    seen: dict[str, set[bool]] = {}
    for path in kit.RULE_TESTS:
        for test in kit.load_yaml(path)["tests"]:
            for check in test.get("alert_rule_test", []):
                seen.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    return seen


def test_every_alert_is_unit_tested_firing_and_handbook_ones_silent_too() -> None:
    seen = alert_expectations()
    for name in kit.alerts():
        assert True in seen.get(name, set()), f"{name}: no unit test where it fires"
    for name, rule in kit.alerts().items():
        if "handbook" in rule["labels"]:
            assert False in seen[name], f"{name}: no unit test where it stays silent"
    assert set(seen) <= set(kit.alerts()), "a unit test names an alert that does not exist"


def test_the_six_handbook_alerts_hold_the_summarys_thresholds() -> None:
    """One alert per handbook metric, in the summary's order, comparing the recorded
    metric with the same threshold and direction, behind the minimum-traffic guard."""
    handbook = [rule for rule in kit.alerts().values() if "handbook" in rule["labels"]]
    assert [rule["labels"]["handbook"] for rule in handbook] == [h[0] for h in kit.HANDBOOK]
    for rule, (key, recorded, threshold, direction) in zip(handbook, kit.HANDBOOK, strict=True):
        comparison = ">" if direction == "above" else "<"
        expr = " ".join(rule["expr"].split())
        assert re.match(rf"{re.escape(recorded)} {comparison} {threshold:g}\b", expr), (key, expr)
        assert "caas:activation_outcomes:increase1h >= 20" in expr, (key, "no traffic guard")
        assert recorded in kit.recording_names()


def test_alerts_carry_a_severity_and_what_to_do() -> None:
    for name, rule in kit.alerts().items():
        assert name.startswith("Caas"), name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook"}, name
        assert "{{" in notes["summary"] + notes["description"], f"{name}: says no value"
    for rule in kit.alerts().values():
        if "handbook" in rule["labels"]:
            assert "/ops/" in rule["annotations"]["runbook"], rule["alert"]


def test_rules_read_only_metrics_the_services_export() -> None:
    """A misspelt metric would make a rule silently empty: every caas_* name in the
    rules is one the services export (the backend's: the contract's list)."""
    known = kit.known_series()
    for path in (kit.RECORDING_YML, kit.ALERTS_YML):
        for rule in kit.rules(path):
            unknown = kit.caas_series_in(rule["expr"]) - known
            assert not unknown, (rule.get("record") or rule.get("alert"), unknown)
            missing = kit.recorded_names_in(rule["expr"]) - kit.recording_names()
            assert not missing, (rule.get("record") or rule.get("alert"), missing)


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for name in kit.recording_names():
        level, metric, operations = name.split(":")
        # the platform as a whole, or the one label kept (a breakdown)
        assert level in ("caas", "reason", "model", "service", "hour", "attempt"), name
        assert re.fullmatch(r"[a-z_]+", metric) and not metric.endswith("_total"), name
        assert re.fullmatch(r"(increase|rate|mean|p\d\d_)(1h|24h)", operations), name


def test_scrape_jobs_are_the_four_services() -> None:
    config = kit.load_yaml(kit.PROMETHEUS_YML)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert tuple(jobs) == kit.JOBS
    assert len(jobs["gateway"]["static_configs"][0]["targets"]) == 2  # two workers
    assert config["rule_files"] == ["rules/recording.yml", "rules/alerts.yml"]


def test_local_config_points_every_job_at_the_given_targets() -> None:
    base = kit.load_yaml(kit.PROMETHEUS_YML)
    targets = {job: [f"127.0.0.1:{9000 + i}"] for i, job in enumerate(kit.JOBS)}
    local = local_config(base, targets, every_s=1)
    assert {j["job_name"]: j["static_configs"][0]["targets"] for j in local["scrape_configs"]} == (
        targets
    )
    assert local["global"]["evaluation_interval"] == local["global"]["scrape_interval"] == "1s"
    assert all(path.startswith("/") for path in local["rule_files"])
    assert "alerting" not in local
    with pytest.raises(ValueError, match="vehicle_sim"):
        local_config(base, {"backend": ["127.0.0.1:1"]}, every_s=1)
