"""The activation state machine as a pure function: every transition with a
ManualClock and a seeded RNG, no I/O, no sleeping."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from gateway.activation import Action, Activation, Phase, State
from gateway.machine import Cancel, Event, Reply, Step, Tick, VehicleView, step
from gateway.policy import RetryPolicy, backoff_bounds_s
from gateway.twin import Twin
from protocol.models import CommandType
from protocol.timeutil import ManualClock, format_ts

pytestmark = pytest.mark.timeout(5)
VIN = "CAATR1234SB000901"
FEATURE = "climate_plus"
POLICY = RetryPolicy(
    max_attempts=3, initial_backoff_s=10, backoff_multiplier=2, max_backoff_s=100,
    jitter_ratio=0.1, status_query_timeout_s=5, ack_timeout_s=20, ready_wait_s=60,
)  # fmt: skip


def state(**over: Any) -> dict[str, Any]:
    base = {"vin": VIN, "model": "Tourer", "firmware": "5.0.2", "online": True, "power": "off",
            "moving": False, "speed_kmh": 0.0, "gear": "P", "busy": False,
            "installed_features": [FEATURE], "active_features": [], "seq": 1,
            "at": "2026-01-01T00:00:00.000Z"}  # fmt: skip
    return {**base, **over}


class Run:
    """One activation driven through events; keeps the clock, rng and last step."""

    def __init__(self, action: Action = Action.ACTIVATE, policy: RetryPolicy = POLICY) -> None:
        self.clock = ManualClock()
        self.rng = random.Random(42)
        now = self.clock.now()
        self.act = Activation("a-1", VIN, FEATURE, action, policy, now, now, due_at=now)
        self.last = Step(self.act)
        self.twin_state: dict[str, Any] | None = state()
        self.online = True
        self.lock: str | None = None
        self.fresh_at: float | None = None  # None: the twin is always fresh

    def view(self) -> VehicleView:
        now = self.clock.now()
        fresh = now if self.fresh_at is None else self.fresh_at
        twin = Twin(
            VIN, self.twin_state, {"vin": VIN, "online": self.online, "at": format_ts(fresh)},
            fresh, fresh, 0.0, 1, {},
        )  # fmt: skip
        return VehicleView(twin, self.lock)

    def apply(self, event: Event) -> Step:
        self.last = step(self.act, replace(event, view=self.view()), self.clock.now(), self.rng)
        self.act = self.last.activation
        return self.last

    def tick(self, after_s: float | None = None) -> Step:
        if after_s is None:
            due = self.act.due_at
            assert due is not None
            self.clock.advance(max(0.0, due - self.clock.now()))
        else:
            self.clock.advance(after_s)
        return self.apply(Tick())

    def answer(self, status: str = "ack", reason: str | None = None, **kw: Any) -> Step:
        assert self.act.pending is not None
        return self.apply(Reply(self.act.pending.command_id, status, reason, **kw))

    def sent(self) -> list[CommandType]:
        return [s.type for s in self.last.sends]

    def events(self) -> list[str]:
        return [e.type for e in self.last.events]


def test_ready_vehicle_gets_the_command_at_once() -> None:
    """QUEUED + fresh ready twin → IN_PROGRESS, activate sent with ttl = ack timeout."""
    run = Run()
    run.tick()
    assert run.act.state is State.IN_PROGRESS
    assert run.sent() == [CommandType.ACTIVATE]
    assert run.last.sends[0].ttl_s == POLICY.ack_timeout_s
    assert run.act.holds_lock
    assert run.act.due_at == run.clock.now() + POLICY.ack_timeout_s
    assert run.act.attempts[0].vehicle_state == run.twin_state


def test_ack_succeeds_and_frees_the_vehicle() -> None:
    """An ack to the pending command → SUCCEEDED, lock released, one succeeded event."""
    run = Run()
    run.tick()
    run.answer("ack", state=state(active_features=[FEATURE]), rtt_s=0.01)
    assert run.act.state is State.SUCCEEDED
    assert not run.act.holds_lock
    assert run.act.due_at is None
    assert run.events() == ["activation.succeeded"]
    assert run.act.attempts[0].result is not None
    assert run.act.attempts[0].result.value == "SUCCESS"


def test_busy_hint_longer_than_the_backoff_is_obeyed() -> None:
    """retry_after_s 30 > backoff(1) ≈ 10 → the next attempt exactly 30 s later."""
    run = Run()
    run.tick()
    failed_at = run.clock.now()
    run.answer("nack", "busy", retry_after_s=30)
    assert run.act.state is State.RETRY_SCHEDULED
    assert run.act.next_attempt_at == failed_at + 30
    assert run.act.due_at == failed_at + 30
    assert run.last.events[0].data["next_attempt_at"] == format_ts(failed_at + 30)
    run.tick(29.0)
    assert run.sent() == [] and run.act.current == 1
    run.tick()
    assert run.sent() == [CommandType.ACTIVATE] and run.act.current == 2


def test_driving_hint_is_capped_by_max_backoff() -> None:
    """A hint past the policy's max_backoff_s (a 7-day trip) waits max_backoff_s only."""
    run = Run()
    run.tick()
    failed_at = run.clock.now()
    run.answer("nack", "driving", retry_after_s=7 * 86_400)
    assert run.act.next_attempt_at == failed_at + POLICY.max_backoff_s


def test_hint_on_the_last_attempt_changes_nothing() -> None:
    """No retry left: the hint is recorded in the errors, the final status is asked."""
    run = Run(policy=replace(POLICY, max_attempts=1))
    run.tick()
    run.answer("nack", "busy", retry_after_s=30)
    assert run.act.state is State.IN_PROGRESS
    assert run.sent() == [CommandType.STATUS]
    assert run.act.iot_errors[-1]["retry_after_s"] == 30


def test_stale_twin_is_probed_first() -> None:
    """A twin older than status_query_timeout_s → status query; its answer → activate."""
    run = Run()
    run.fresh_at = run.clock.now()
    run.clock.advance(POLICY.status_query_timeout_s + 1)
    run.apply(Tick())
    assert run.sent() == [CommandType.STATUS]
    assert run.act.state is State.WAITING_VEHICLE
    assert run.act.phase is Phase.PROBE
    run.fresh_at = None  # the answer refreshed the twin
    run.answer("ack", state=state())
    assert run.sent() == [CommandType.ACTIVATE]


def test_busy_nack_schedules_a_retry_within_jitter() -> None:
    """Retryable nack → RETRY_SCHEDULED at now + backoff(1) ± jitter, attempt FAILED_RETRY."""
    run = Run()
    run.tick()
    failed_at = run.clock.now()
    run.answer("nack", "busy", retry_after_s=5)  # shorter than the backoff: no effect
    assert run.act.state is State.RETRY_SCHEDULED
    low, high = backoff_bounds_s(POLICY, 1)
    assert run.act.next_attempt_at is not None
    assert low <= run.act.next_attempt_at - failed_at <= high
    assert run.events() == ["activation.attempt_failed"]
    assert not run.act.holds_lock
    run.tick()
    assert run.sent() == [CommandType.ACTIVATE]
    assert run.act.current == 2
    assert run.last.sends[0].attempt == 2


def test_terminal_nack_escalates_with_diagnostics() -> None:
    """conflict → no retry; status then diagnostics queries; FAILED with the package."""
    run = Run()
    run.tick()
    run.answer("nack", "conflict")
    assert run.sent() == [CommandType.STATUS]
    assert run.act.state is State.IN_PROGRESS
    run.answer("ack", state=state())
    assert run.sent() == [CommandType.DIAGNOSTICS]
    diag = {"dtcs": [], "model": "Tourer", "firmware": "5.0.2"}
    final = run.answer("ack", diagnostics=diag).activation
    assert final.state is State.FAILED
    assert run.act.failure_category is not None
    assert run.act.failure_category.value == "configuration_conflict"
    assert run.events() == ["activation.failed"]
    package = run.act.diagnostics
    assert package is not None
    assert package["vehicle_diagnostics"] == diag
    assert package["iot_errors"][0]["reason"] == "conflict"
    assert package["model"] == "Tourer"
    assert [a["result"] for a in package["attempts"]] == ["FAILED_ESCALATE"]


def test_final_queries_may_go_unanswered() -> None:
    """Unanswered final status and diagnostics still end FAILED (package without them)."""
    run = Run(policy=RetryPolicy(**{**POLICY.to_dict(), "max_attempts": 1}))
    run.tick()
    run.answer("nack", "internal_error")
    run.tick()  # status unanswered
    run.tick()  # diagnostics unanswered
    assert run.act.state is State.FAILED
    assert run.act.diagnostics is not None
    assert run.act.diagnostics["vehicle_diagnostics"] is None
    assert run.act.failure_category is not None
    assert run.act.failure_category.value == "persistent_iot_failure"


def _last_attempt_unanswered(outcome_wait_s: float) -> Run:
    """One attempt: the activate and the status query after it both unanswered."""
    policy = {**POLICY.to_dict(), "max_attempts": 1, "outcome_wait_s": outcome_wait_s}
    run = Run(policy=RetryPolicy(**policy))
    run.tick()  # activate sent
    run.tick()  # ack timeout → status query
    run.tick()  # status query unanswered → last attempt failed → final status query
    assert run.act.phase is Phase.FINAL_STATUS
    assert run.act.unanswered_at is not None
    return run


def test_unknown_outcome_asks_again_until_answered() -> None:
    """Last attempt unanswered: a missing final status is asked again, not a failure;
    the answer showing the feature active → SUCCEEDED (a lost answer is not a failure)."""
    run = _last_attempt_unanswered(outcome_wait_s=30)
    for _ in range(3):  # three more unanswered status queries, 15 s < 30 s
        run.tick()
        assert run.sent() == [CommandType.STATUS]
        assert run.act.state is State.IN_PROGRESS
    run.answer("ack", state=state(active_features=[FEATURE]))
    assert run.act.state is State.SUCCEEDED


def test_unknown_outcome_answered_inactive_fails_at_once() -> None:
    """An answered final status showing the feature off decides: diagnostics, FAILED."""
    run = _last_attempt_unanswered(outcome_wait_s=30)
    run.answer("ack", state=state())
    assert run.sent() == [CommandType.DIAGNOSTICS]
    run.answer("ack", diagnostics={}, state=state())
    assert run.act.state is State.FAILED
    assert run.act.diagnostics is not None
    assert run.act.diagnostics["note"] is None


def test_unknown_outcome_fails_after_the_window() -> None:
    """Nobody answers for outcome_wait_s: FAILED, and the package says the outcome is
    unknown (reconciliation will switch the feature off if the vehicle did act)."""
    run = _last_attempt_unanswered(outcome_wait_s=12)
    started = run.clock.now()
    while run.act.phase is Phase.FINAL_STATUS:
        run.tick()
    assert run.clock.now() - started >= 12
    run.tick()  # diagnostics unanswered
    assert run.act.state is State.FAILED
    assert run.act.diagnostics is not None
    assert "outcome unknown" in run.act.diagnostics["note"]


def test_known_outcome_does_not_wait() -> None:
    """No command went unanswered (a nack): one unanswered final status is enough."""
    run = Run(policy=RetryPolicy(**{**POLICY.to_dict(), "max_attempts": 1}))
    run.tick()
    run.answer("nack", "internal_error", state=state())
    run.tick()  # status unanswered
    assert run.sent() == [CommandType.DIAGNOSTICS]


def test_timeout_then_status_active_succeeds_without_resend() -> None:
    """Ack timeout → status query; feature active → SUCCEEDED, no second activate."""
    run = Run()
    run.tick()
    run.tick()  # ack timeout
    assert run.sent() == [CommandType.STATUS]
    assert run.act.attempts[0].response_code == "timeout"
    run.answer("ack", state=state(active_features=[FEATURE]))
    assert run.act.state is State.SUCCEEDED
    assert run.sent() == []
    assert len(run.act.attempts) == 1


def test_timeout_then_status_inactive_retries() -> None:
    """Ack timeout and the status shows nothing changed → retry with category timeout."""
    run = Run()
    run.tick()
    run.tick()
    run.answer("ack", state=state())
    assert run.act.state is State.RETRY_SCHEDULED
    assert run.act.failure_category is not None
    assert run.act.failure_category.value == "timeout"


def test_expired_is_retryable_once() -> None:
    """First expired nack → retry; second → terminal."""
    run = Run(policy=RetryPolicy(**{**POLICY.to_dict(), "max_attempts": 5}))
    run.tick()
    run.answer("nack", "expired")
    assert run.act.state is State.RETRY_SCHEDULED
    run.tick()
    run.answer("nack", "expired")
    assert run.sent() == [CommandType.STATUS]
    assert [a.result.value for a in run.act.attempts if a.result] == [
        "FAILED_RETRY",
        "FAILED_ESCALATE",
    ]


def test_exhausted_attempts_fail_with_last_category() -> None:
    """max_attempts retryable failures → final queries → FAILED vehicle_state."""
    run = Run()
    for _ in range(3):
        run.tick()
        run.answer("nack", "driving")
    assert run.sent() == [CommandType.STATUS]
    run.answer("ack", state=state())
    run.answer("ack", diagnostics={})
    assert run.act.state is State.FAILED
    assert run.act.failure_category is not None
    assert run.act.failure_category.value == "vehicle_state"
    assert len(run.act.attempts) == 3


def test_not_ready_waits_then_sends_on_wake() -> None:
    """Driving twin → WAITING_VEHICLE until the deadline; a wake with a parked twin sends."""
    run = Run()
    run.twin_state = state(moving=True, gear="D")
    run.tick()
    assert run.act.state is State.WAITING_VEHICLE
    assert run.act.waiting_for == "driving"
    assert run.act.waiting
    assert run.sent() == []
    unchanged = run.apply(Tick())  # an early wake that changes nothing
    assert not unchanged.changed
    run.clock.advance(5)
    run.twin_state = state()
    run.apply(Tick())
    assert run.sent() == [CommandType.ACTIVATE]
    assert not run.act.waiting


def test_not_ready_past_ready_wait_fails_the_attempt() -> None:
    """Still offline at the deadline → attempt not_ready (command_sent false), retry."""
    run = Run()
    run.online = False
    run.twin_state = state(online=False)
    run.tick()
    run.tick()  # the ready_wait_s deadline
    attempt = run.act.attempts[0]
    assert (attempt.response_code, attempt.command_sent) == ("not_ready", False)
    assert attempt.response_message == "offline"
    assert run.act.state is State.RETRY_SCHEDULED
    assert run.act.failure_category is not None
    assert run.act.failure_category.value == "transient_connectivity"


def test_another_command_in_flight_waits() -> None:
    """The vehicle lock held by another activation → wait, no command."""
    run = Run()
    run.lock = "other"
    run.tick()
    assert run.act.state is State.WAITING_VEHICLE
    assert run.sent() == []
    run.lock = None
    run.apply(Tick())
    assert run.sent() == [CommandType.ACTIVATE]


def test_duplicate_and_unknown_replies_are_no_ops() -> None:
    """A second answer to a finished command and a stranger's answer change nothing."""
    run = Run()
    run.tick()
    command_id = run.act.pending.command_id if run.act.pending else ""
    run.answer("nack", "busy")
    again = run.apply(Reply(command_id, "nack", "busy"))
    assert not again.changed
    stranger = run.apply(Reply("not-ours", "ack"))
    assert not stranger.changed


def test_late_ack_during_backoff_succeeds() -> None:
    """An ack to attempt 1 arriving while attempt 2 is scheduled → SUCCEEDED."""
    run = Run()
    run.tick()
    first = run.act.pending.command_id if run.act.pending else ""
    run.tick()  # ack timeout → status query
    run.answer("ack", state=state())  # status: not active → retry scheduled
    assert run.act.state is State.RETRY_SCHEDULED
    late = run.apply(Reply(first, "ack", state=state(active_features=[FEATURE])))
    assert late.activation.state is State.SUCCEEDED
    assert run.act.due_at is None


def test_reply_after_terminal_changes_nothing() -> None:
    """Terminal activations ignore everything, including late acks."""
    run = Run()
    run.tick()
    command_id = run.act.pending.command_id if run.act.pending else ""
    run.answer("ack")
    assert not run.apply(Reply(command_id, "ack")).changed


def test_cancel() -> None:
    """Cancel of a live activation → CANCELLED with an event; the lock is freed."""
    run = Run()
    run.tick()
    run.apply(Cancel())
    assert run.act.state is State.CANCELLED
    assert not run.act.holds_lock
    assert run.events() == ["activation.cancelled"]


def test_premature_tick_is_a_no_op() -> None:
    """A timer that fires before due_at (a stale lease) does nothing outside WAIT."""
    run = Run()
    run.tick()
    assert not run.apply(Tick()).changed


def test_deactivate_checks_the_feature_is_off() -> None:
    """For deactivate, a status after timeout showing the feature off means success."""
    run = Run(action=Action.DEACTIVATE)
    run.tick()
    assert run.sent() == [CommandType.DEACTIVATE]
    run.tick()
    run.answer("ack", state=state(active_features=[]))
    assert run.act.state is State.SUCCEEDED


def test_same_inputs_same_outputs() -> None:
    """Deterministic: the same events with the same seed give identical activations."""

    def play() -> Activation:
        run = Run()
        run.tick()
        run.answer("nack", "busy")
        run.tick()
        return run.act

    assert play() == play()


def test_record_round_trip() -> None:
    """to_record/from_record keeps every field (what Redis stores is what comes back)."""
    run = Run()
    run.tick()
    run.answer("nack", "busy", rtt_s=0.02, state=state())
    assert Activation.from_record(run.act.to_record()) == run.act


def test_unanswered_probe_waits_for_a_change() -> None:
    """Stale twin and no answer to the probe → no command on stale data; wait."""
    run = Run()
    run.fresh_at = run.clock.now()
    run.clock.advance(POLICY.status_query_timeout_s + 1)
    run.apply(Tick())
    run.tick()  # the probe times out
    assert run.sent() == []
    assert run.act.state is State.WAITING_VEHICLE
    assert run.act.phase is Phase.WAIT
    assert not run.act.holds_lock


def test_late_probe_answer_still_counts() -> None:
    """The probe timed out, but the vehicle was heard from since: send, do not wait."""
    run = Run()
    run.fresh_at = run.clock.now()
    run.clock.advance(POLICY.status_query_timeout_s + 1)
    run.apply(Tick())
    probed_at = run.clock.now()
    run.tick()  # the probe times out → wait
    assert run.act.phase is Phase.WAIT
    run.clock.advance(POLICY.status_query_timeout_s + 1)
    run.fresh_at = probed_at + 0.5  # its answer arrived late and refreshed the twin
    woken = run.apply(Tick())
    assert [s.type for s in woken.sends] == [CommandType.ACTIVATE]
