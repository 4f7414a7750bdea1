"""loadtest/: outcome events map to Locust's three request events; stage parsing."""

from __future__ import annotations

from loadtest.activation_client import OutcomeWatcher
from loadtest.stages import parse_stages, users_at


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
    assert pending.first.get(timeout=0) == (False, "nack: busy")
    assert pending.final.get(timeout=0) == (True, "")
    assert "a1" not in w.pending


def test_failure_named_by_category_and_unknown_ids_ignored() -> None:
    """A failed activation's final carries its failure category; others' events are ignored."""
    w = watcher()
    pending = w.register("a2")
    w.resolve("activation.failed", {"activation_id": "other", "failure_category": "timeout"})
    assert not pending.final.ready()
    w.resolve("activation.failed", {"activation_id": "a2", "failure_category": "timeout"})
    assert pending.first.get(timeout=0) == (False, "failed")
    assert pending.final.get(timeout=0) == (False, "timeout")


def test_stages() -> None:
    """NAME:SECONDS:USERS, comma separated; users per moment; None after the last stage."""
    assert parse_stages("ramp:30:50, soak:60:50,spike:15:200") == [
        ("ramp", 30.0, 50),
        ("soak", 60.0, 50),
        ("spike", 15.0, 200),
    ]
    stages = parse_stages("ramp:10:5,spike:5:50")
    assert [users_at(stages, t) for t in (0, 9.9, 10, 14.9, 15)] == [5, 5, 50, 50, None]
