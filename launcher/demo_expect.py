"""What the demo's fleet mix makes the handbook say, told before the run: which share
of the fleet fails on purpose, and which handbook alerts that share will raise.

Pure: the scenario's mix and stages in, shares and the expected alerts out. The alert
thresholds are the backend's own (``backend.domain.handbook``), so a changed threshold
changes the forecast too.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.domain.handbook import HANDBOOK
from launcher.demo_report import shown
from vehicle_sim.fleet import Mode
from vehicle_sim.scenario import Scenario

# what a vehicle of each mode does to its activation, when it fails for good
FAILS_ON_PURPOSE = {
    Mode.CONFLICT: "conflict (a configuration conflict)",
    Mode.NACK: "nack (refuses every command)",
    Mode.TIMEOUT: "timeout (never answers)",
    Mode.OFFLINE: "offline (off line for good)",
}
# seed_demo: every third customer pays by direct debit, charged before the activation
DIRECT_DEBIT_SHARE = 1 / 3


@dataclass(frozen=True)
class Forecast:
    failing: dict[Mode, float]  # share of the fleet failing on purpose, by mode
    not_online: float  # share not simply online at the start: waited for, retried, failing
    expected_alerts: frozenset[str]  # handbook keys

    @property
    def failure_share(self) -> float:
        return sum(self.failing.values())

    def predicted(self) -> dict[str, float]:
        """The handbook values the mix implies (the others depend on timing). A failing
        vehicle never succeeds at its first attempt: first-attempt success is at most
        the rest (busy, driving or flaky vehicles take it lower, by how much depends on
        timing)."""
        return {
            "activation_failure_rate": self.failure_share,
            "first_attempt_success_rate": 1 - self.failure_share,
            "customer_impact_rate": self.failure_share * DIRECT_DEBIT_SHARE,
        }


def forecast(scenario: Scenario) -> Forecast:
    total = sum(scenario.mix.values())
    share = {mode: weight / total for mode, weight in scenario.mix.items()}
    staying = dict.fromkeys(share, 1.0)  # the part of each mode that never comes online
    for stage in scenario.stages:
        if stage.set_mode == Mode.ONLINE:
            for mode in stage.from_modes or list(share):
                staying[mode] *= 1 - stage.fraction
    failing = {
        mode: share[mode] * staying[mode]
        for mode in FAILS_ON_PURPOSE
        if mode in share and share[mode] * staying[mode] > 0
    }
    not_online = sum(s for mode, s in share.items() if mode != Mode.ONLINE)
    values = Forecast(failing, not_online, frozenset()).predicted()
    expected = frozenset(d.key for d in HANDBOOK if d.key in values and d.alerting(values[d.key]))
    return Forecast(failing, not_online, expected)


def explain(f: Forecast) -> list[str]:
    """The demo's opening lines about its fleet."""
    parts = ", ".join(
        f"{FAILS_ON_PURPOSE[mode]} {share:.0%}" for mode, share in sorted(f.failing.items())
    )
    lines = [
        f"demo: {f.failure_share:.0%} of the fleet fails on purpose: {parts}",
        f"demo: {f.not_online:.0%} of it is not simply online (busy, driving, "
        "off line, flaky or failing): retries, then support tickets for the failures",
    ]
    values = f.predicted()
    about = {"first_attempt_success_rate": "at most "}  # an upper bound, the others ~
    alerts = [
        f"{d.name} {about.get(d.key, '~')}{shown(values[d.key], d.unit)} "
        f"({'>' if d.alert_when == 'above' else '<'} {shown(d.threshold, d.unit)})"
        for d in HANDBOOK
        if d.key in f.expected_alerts
    ]
    lines.append(
        "demo: so expect these handbook ALERTs: " + "; ".join(alerts)
        if alerts
        else "demo: no handbook alert is expected from this fleet"
    )
    return lines
