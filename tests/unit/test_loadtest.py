"""loadtest/: outcome events map to Locust's three request events; in-flight activations
are reported at the stop; stage parsing; the pass/fail verdict."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from loadtest.activation_client import IN_FLIGHT_AT_STOP, OutcomeWatcher
from loadtest.stages import parse_stages, users_at
from loadtest.thresholds import Limits, Reading, violations


def watcher() -> OutcomeWatcher:
    return OutcomeWatcher("redis://127.0.0.1:1/0")  # never connected: resolve() is pure


def test_first_attempt_nack_then_success() -> None:
    """ack fails named by the nack reason; final succeeds once the retry lands."""
    w = watcher()
    pending = w.register("a1")
    w.resolve(
        "activation.attempt_failed",
        {"activation_id": "a1", "response_code": "nack", "response_message": "busy"},
    )
    w.resolve("activation.succeeded", {"activation_id": "a1"})
    assert pending.first.get(timeout=0)[:2] == (False, "nack: busy")
    assert pending.final.get(timeout=0)[:2] == (True, "")
    assert "a1" not in w.pending


def test_failure_named_by_category_and_unknown_ids_ignored() -> None:
    """A failed activation's final carries its failure category; others' events are ignored."""
    w = watcher()
    pending = w.register("a2")
    w.resolve("activation.failed", {"activation_id": "other", "failure_category": "timeout"})
    assert not pending.final.ready()
    w.resolve("activation.failed", {"activation_id": "a2", "failure_category": "timeout"})
    assert pending.first.get(timeout=0)[:2] == (False, "failed")
    assert pending.final.get(timeout=0)[:2] == (False, "timeout")


def test_stages() -> None:
    """NAME:SECONDS:USERS, comma separated; users per moment; None after the last stage."""
    assert parse_stages("ramp:30:50, soak:60:50,spike:15:200") == [
        ("ramp", 30.0, 50),
        ("soak", 60.0, 50),
        ("spike", 15.0, 200),
    ]
    stages = parse_stages("ramp:10:5,spike:5:50")
    assert [users_at(stages, t) for t in (0, 9.9, 10, 14.9, 15)] == [5, 5, 50, 50, None]


class Recorder:
    """Stands in for a Locust environment: the request events fired."""

    def __init__(self) -> None:
        self.fired: list[dict[str, Any]] = []
        self.events = SimpleNamespace(request=SimpleNamespace(fire=self.record))

    def record(self, **event: Any) -> None:
        self.fired.append(event)


def test_in_flight_at_stop_reported_once_each() -> None:
    """At the stop: a resolved activation whose user was killed gets its missing events
    (timed up to its outcome); an unresolved one gets ack and final as failures named
    "in flight at stop"; events already fired are not fired again."""
    w, env = watcher(), Recorder()
    done, open_ = w.register("done"), w.register("open")
    done.started = open_.started = 100.0
    done.reported.add("activation/ack")  # its user fired the ack before being killed
    w.in_flight.update(done=done, open=open_)
    w.resolve("activation.succeeded", {"activation_id": "done"}, at=100.25)
    assert w.report_in_flight(env, drain_s=0) == 1
    assert not w.in_flight
    fired = {(e["name"], str(e["exception"] or "")): e["response_time"] for e in env.fired}
    assert set(fired) == {
        ("activation/final", ""),
        ("activation/ack", IN_FLIGHT_AT_STOP),
        ("activation/final", IN_FLIGHT_AT_STOP),
    }
    assert fired[("activation/final", "")] == 250.0
    assert w.report_in_flight(env, drain_s=0) == 0 and len(env.fired) == 3


def test_verdict_passes_exactly_when_every_limit_holds() -> None:
    """Failures under the ratio pass (Locust alone would exit 1); one name over a limit,
    no request at all, or an error in user code fail."""
    limits = Limits(max_fail_ratio=0.05, max_p95_ms=1000)
    under = [Reading("activation/final", 100, 0.04, 900), Reading("unused", 0, 0, 0)]
    assert violations(under, limits) == []
    over = [*under, Reading("activation/ack", 100, 0.0, 1500)]
    assert [line.split(":")[0] for line in violations(over, limits)] == ["activation/ack"]
    assert violations([Reading("activation/final", 10, 0.5, 10)], limits)
    assert violations([], limits) == ["no request was made"]
    assert len(violations(under, limits, user_errors=2)) == 1
    assert Limits.from_env({"CAAS_LOAD_MAX_FAIL_RATIO": "0.2"}) == Limits(0.2, 5000.0)
