"""The activation state machine as a pure function (docs/spec.md §2.3, §3).

    step(activation, event, now, rng) -> Step(activation', sends, events)

No I/O, no clock, no global randomness: ``now`` and ``rng`` come in (jitter and
command ids draw from ``rng``), the vehicle as the gateway knows it rides on the event
(``VehicleView``: twin + who holds the vehicle's command slot), and the policy travels
with the activation (a per-request policy is part of the record). The store commits
the new activation, its timer, lock, and events in one atomic step; the sends go out
after the commit (a lost send is covered by the ack timeout).

Events: ``Tick`` (the activation's timer is due, or a wake-up because the vehicle
changed or its command slot was freed), ``Reply`` (a response matched by command_id),
``Cancel``. A response that matches nothing awaited is a no-op, except an ``ack`` to
any feature command this activation sent: the vehicle did act, so a non-terminal
activation SUCCEEDS (late ack).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from typing import Any

from gateway.activation import (
    Action,
    Activation,
    Attempt,
    AttemptResult,
    FailureCategory,
    Pending,
    Phase,
    State,
)
from gateway.diagnostics import build_package
from gateway.events import Cancel, Emit, Event, Reply, Send, Step, Tick, VehicleView
from gateway.policy import retry_delay_s
from gateway.twin import Twin, feature_active, readiness
from protocol.models import RETRYABLE_REASONS, CommandType, NackReason
from protocol.timeutil import format_ts

__all__ = ["Cancel", "Emit", "Event", "Reply", "Send", "Step", "Tick", "VehicleView", "step"]
SNAPSHOTS_KEPT = 20
ERRORS_KEPT = 20
CATEGORY_BY_REASON = {
    NackReason.BUSY: FailureCategory.VEHICLE_STATE,
    NackReason.DRIVING: FailureCategory.VEHICLE_STATE,
    NackReason.POWERED_OFF: FailureCategory.VEHICLE_STATE,
    NackReason.INTERNAL_ERROR: FailureCategory.PERSISTENT_IOT_FAILURE,
    NackReason.CONFLICT: FailureCategory.CONFIGURATION_CONFLICT,
    NackReason.NOT_INSTALLED: FailureCategory.CONFIGURATION_CONFLICT,
    NackReason.BAD_SIGNATURE: FailureCategory.PERSISTENT_IOT_FAILURE,
    NackReason.WRONG_VEHICLE: FailureCategory.PERSISTENT_IOT_FAILURE,
    NackReason.MALFORMED: FailureCategory.PERSISTENT_IOT_FAILURE,
    NackReason.EXPIRED: FailureCategory.PERSISTENT_IOT_FAILURE,
}


class _Out:
    """Accumulates one step's new activation and effects."""

    def __init__(self, act: Activation, view: VehicleView, now: float, rng: random.Random):
        self.act = act
        self.view = view
        self.now = now
        self.rng = rng
        self.sends: list[Send] = []
        self.events: list[Emit] = []

    def set(self, **changes: Any) -> None:
        self.act = replace(self.act, **changes)

    def emit(self, type: str, **data: Any) -> None:
        a = self.act
        base = {"activation_id": a.activation_id, "vin": a.vin, "feature": a.feature}
        self.events.append(Emit(type, {**base, "action": a.action.value, **data}))

    def send(self, ctype: CommandType, ttl_s: float) -> Pending:
        command_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.sends.append(Send(command_id, ctype, max(1, self.act.current), ttl_s))
        return Pending(command_id, ctype.value, self.now)


# ---------------------------------------------------------------- entry point
def step(act: Activation, event: Event, now: float, rng: random.Random) -> Step:
    if act.terminal:
        return Step(act)
    out = _Out(act, event.view, now, rng)
    if isinstance(event, Cancel):
        _cancel(out)
    elif isinstance(event, Reply):
        _on_reply(out, event)
    else:
        _on_tick(out)
    if out.act == act and not out.sends and not out.events:
        return Step(act)
    return Step(replace(out.act, updated_at=now), tuple(out.sends), tuple(out.events), True)


def _on_tick(out: _Out) -> None:
    act = out.act
    if act.due_at is None or out.now < act.due_at:
        if act.phase is Phase.WAIT:
            _check_ready(out)  # woken early: the vehicle changed or its slot was freed
        return
    phase = act.phase
    if phase in (Phase.START, Phase.BACKOFF):
        out.set(current=act.current + 1, wait_deadline=out.now + act.policy.ready_wait_s)
        out.set(probed=False, probed_at=None, next_attempt_at=None)
        _check_ready(out)
    elif phase is Phase.WAIT:
        _check_ready(out)
    elif phase is Phase.PROBE:
        out.set(pending=None)
        _check_ready(out)
    elif phase is Phase.AWAIT_ACK:
        _update_attempt(out, response_code="timeout", response_message="no answer in time")
        _query(out, Phase.TIMEOUT_STATUS, CommandType.STATUS)
    elif phase is Phase.TIMEOUT_STATUS:
        out.set(unanswered_at=act.unanswered_at or out.now)
        msg = "no answer; status query unanswered"
        _fail_attempt(out, "timeout", msg, FailureCategory.TIMEOUT, retryable=True)
    elif phase is Phase.FINAL_STATUS:
        _final_status_missing(out)
    elif phase is Phase.FINAL_DIAG:
        _finish_failed(out, None, "diagnostics query unanswered")


# ---------------------------------------------------------------- readiness and sending
def _check_ready(out: _Out) -> None:
    act, view, policy = out.act, out.view, out.act.policy
    if view.lock_holder not in (None, act.activation_id):
        _wait_or_fail(out, "another command in flight", FailureCategory.VEHICLE_STATE)
        return
    twin = view.twin
    stale = twin is None or twin.age_s(out.now) > policy.status_query_timeout_s
    if twin is not None and act.probed_at is not None and twin.fresh_at >= act.probed_at:
        stale = False  # heard from the vehicle since our probe (however late the answer)
    if stale and not act.probed:
        out.set(probed=True, probed_at=out.now)
        _query(out, Phase.PROBE, CommandType.STATUS, State.WAITING_VEHICLE)
        return
    verdict = readiness(twin)
    if verdict.ready and stale:
        why = "no fresh state (status query unanswered)"
        _wait_or_fail(out, why, FailureCategory.TRANSIENT_CONNECTIVITY)
    elif verdict.ready:
        _send_feature(out, twin)
    else:
        _wait_or_fail(out, verdict.why, verdict.category or FailureCategory.VEHICLE_STATE)


def _wait_or_fail(out: _Out, why: str, category: FailureCategory) -> None:
    act = out.act
    if act.wait_deadline is None or out.now >= act.wait_deadline:
        _fail_attempt(out, "not_ready", why, category, retryable=True)
        return
    out.set(
        state=State.WAITING_VEHICLE,
        phase=Phase.WAIT,
        due_at=act.wait_deadline,
        waiting=True,
        waiting_for=why,
        holds_lock=False,
        pending=None,
    )


def _send_feature(out: _Out, twin: Twin | None) -> None:
    act = out.act
    ctype = CommandType.ACTIVATE if act.action is Action.ACTIVATE else CommandType.DEACTIVATE
    pending = out.send(ctype, act.policy.ack_timeout_s)
    state = twin.state if twin else None
    attempt = Attempt(act.current, pending.command_id, out.now, state, command_sent=True)
    out.set(
        state=State.IN_PROGRESS,
        phase=Phase.AWAIT_ACK,
        attempts=(*act.attempts, attempt),
        due_at=out.now + act.policy.ack_timeout_s,
        holds_lock=True,
        waiting=False,
        waiting_for=None,
        pending=pending,
        sent_ids=(*act.sent_ids, pending.command_id),
        snapshots=_keep(act.snapshots, state, SNAPSHOTS_KEPT),
    )


def _query(out: _Out, phase: Phase, ctype: CommandType, state: State = State.IN_PROGRESS) -> None:
    timeout = out.act.policy.status_query_timeout_s
    pending = out.send(ctype, timeout)
    out.set(
        state=state,
        phase=phase,
        due_at=out.now + timeout,
        holds_lock=True,
        waiting=False,
        pending=pending,
    )


# ---------------------------------------------------------------- responses
def _on_reply(out: _Out, reply: Reply) -> None:
    act = out.act
    pending = act.pending
    if pending is None or reply.command_id != pending.command_id:
        if reply.command_id in act.sent_ids and reply.status == "ack":
            _record_answer(out, reply)
            _succeed(out, "late ack to an earlier command")
        return
    _record_answer(out, reply)
    out.set(pending=None)
    phase = act.phase
    if phase is Phase.AWAIT_ACK:
        _on_feature_answer(out, reply)
    elif phase is Phase.PROBE:
        _check_ready(out)
    elif phase is Phase.TIMEOUT_STATUS:
        if reply.status == "ack" and _wanted(act, reply.state):
            _update_attempt(out, result=AttemptResult.SUCCESS)
            _succeed(out, "confirmed by a status query after the ack timeout")
        else:
            msg = "no answer; status shows the feature unchanged"
            _fail_attempt(out, "timeout", msg, FailureCategory.TIMEOUT, retryable=True)
    elif phase is Phase.FINAL_STATUS:
        if reply.state is None:  # says nothing about the feature: as if unanswered
            _final_status_missing(out)
            return
        out.set(final_state=reply.state)
        if reply.status == "ack" and _wanted(act, reply.state):
            _succeed(out, "final status shows the wanted state")
        else:
            _query(out, Phase.FINAL_DIAG, CommandType.DIAGNOSTICS)
    elif phase is Phase.FINAL_DIAG:
        _finish_failed(out, reply.diagnostics if reply.status == "ack" else None, None)


def _record_answer(out: _Out, reply: Reply) -> None:
    act = out.act
    if reply.rtt_s is not None:
        out.set(rtts_ms=(*act.rtts_ms, round(reply.rtt_s * 1000, 3))[-100:])
    if reply.state is not None:
        # the vehicle's state now, after every command we sent before: nothing unknown
        out.set(snapshots=_keep(act.snapshots, reply.state, SNAPSHOTS_KEPT), unanswered_at=None)
    if reply.status == "nack":
        error = {
            "command_id": reply.command_id,
            "reason": reply.reason,
            "retry_after_s": reply.retry_after_s,
            "at": format_ts(out.now),
        }
        out.set(iot_errors=_keep(act.iot_errors, error, ERRORS_KEPT))


def _on_feature_answer(out: _Out, reply: Reply) -> None:
    if reply.status == "ack":
        _update_attempt(out, response_code="ack", result=AttemptResult.SUCCESS)
        _succeed(out, None)
        return
    reason = _reason(reply.reason)
    category = FailureCategory.PERSISTENT_IOT_FAILURE
    if reason is not None:
        category = CATEGORY_BY_REASON.get(reason, category)
    message = reply.reason or "nack without a reason"
    if reason in RETRYABLE_REASONS:
        # busy/driving say how long they will refuse: the retry waits for that (bounded)
        hint = reply.retry_after_s
        _fail_attempt(
            out, "nack", message, category, retryable=True, reason=message, retry_after_s=hint
        )
    elif reason is NackReason.EXPIRED and out.act.expired_nacks == 0:
        out.set(expired_nacks=1)
        _fail_attempt(out, "nack", message, category, retryable=True, reason=message)
    else:
        _fail_attempt(out, "nack", message, category, retryable=False, reason=message)


def _reason(value: str | None) -> NackReason | None:
    try:
        return NackReason(value) if value else None
    except ValueError:
        return None


def _wanted(act: Activation, state: dict[str, Any] | None) -> bool:
    active = feature_active(state, act.feature)
    if active is None:
        return False
    return active if act.action is Action.ACTIVATE else not active


# ---------------------------------------------------------------- outcomes
def _update_attempt(out: _Out, **changes: Any) -> None:
    attempts = out.act.attempts
    if attempts and attempts[-1].n == out.act.current:
        out.set(attempts=(*attempts[:-1], replace(attempts[-1], **changes)))


def _fail_attempt(
    out: _Out,
    code: str,
    message: str,
    category: FailureCategory,
    *,
    retryable: bool,
    reason: str | None = None,
    retry_after_s: float | None = None,
) -> None:
    act = out.act
    again = retryable and act.current < act.policy.max_attempts
    result = AttemptResult.FAILED_RETRY if again else AttemptResult.FAILED_ESCALATE
    if act.attempts and act.attempts[-1].n == act.current:
        _update_attempt(out, response_code=code, response_message=message, result=result)
        _update_attempt(out, reason=reason)
    else:
        twin = out.view.twin
        attempt = Attempt(
            act.current, None, out.now, twin.state if twin else None, False,
            code, message, result, reason,
        )  # fmt: skip
        out.set(attempts=(*act.attempts, attempt))
    out.set(failure_category=category, pending=None, waiting=False, waiting_for=None)
    if not again:
        _emit_attempt_failed(out, code, message, result, None)
        _start_final(out)
        return
    at = out.now + retry_delay_s(act.policy, act.current, out.rng, retry_after_s)
    out.set(
        state=State.RETRY_SCHEDULED,
        phase=Phase.BACKOFF,
        due_at=at,
        next_attempt_at=at,
        holds_lock=False,
    )
    _emit_attempt_failed(out, code, message, result, format_ts(at))


def _emit_attempt_failed(
    out: _Out, code: str, message: str, result: AttemptResult, next_at: str | None
) -> None:
    out.emit(
        "activation.attempt_failed",
        n=out.act.current,
        response_code=code,
        response_message=message,
        result=result.value,
        next_attempt_at=next_at,
    )


def _start_final(out: _Out) -> None:
    """After the last attempt or a terminal nack: status + diagnostics, then FAILED.

    While the vehicle may have acted on a command nobody heard the answer to
    (``unanswered_at``), a missing status answer decides nothing: the status query is
    asked again (a worker that froze or died with the answer is not the vehicle's
    fault; a live worker gets the next one) until ``outcome_wait_s`` has passed."""
    holder = out.view.lock_holder
    if holder not in (None, out.act.activation_id):
        _finish_failed(out, None, "final queries skipped: another command in flight")
        return
    if out.act.unanswered_at is not None:
        out.set(final_deadline=out.now + out.act.policy.outcome_wait_s)
    _query(out, Phase.FINAL_STATUS, CommandType.STATUS)


def _final_status_missing(out: _Out) -> None:
    act = out.act
    if act.unanswered_at is not None and act.final_deadline and out.now < act.final_deadline:
        _query(out, Phase.FINAL_STATUS, CommandType.STATUS)
    else:
        _query(out, Phase.FINAL_DIAG, CommandType.DIAGNOSTICS)


def _finish_failed(out: _Out, diagnostics: dict[str, Any] | None, note: str | None) -> None:
    if out.act.unanswered_at is not None:
        note = (
            "outcome unknown: the vehicle answered no status query within outcome_wait_s; "
            "if it did act, reconciliation switches the feature off"
        )
    _end(out, State.FAILED)
    package = build_package(out.act, diagnostics, out.now, note)
    out.set(diagnostics=package)
    category = out.act.failure_category
    out.emit(
        "activation.failed",
        failure_category=category.value if category else None,
        attempts=len(out.act.attempts),
        diagnostics=package,
    )


def _succeed(out: _Out, note: str | None) -> None:
    _end(out, State.SUCCEEDED)
    out.set(failure_category=None)
    act = out.act
    out.emit(
        "activation.succeeded",
        attempts=act.current,
        time_to_activation_s=round(out.now - act.created_at, 3),
        note=note,
    )


def _cancel(out: _Out) -> None:
    _end(out, State.CANCELLED)
    out.emit("activation.cancelled", attempts=out.act.current)


def _end(out: _Out, state: State) -> None:
    out.set(
        state=state,
        phase=Phase.DONE,
        due_at=None,
        next_attempt_at=None,
        holds_lock=False,
        waiting=False,
        waiting_for=None,
        pending=None,
    )


def _keep(items: tuple[Any, ...], item: Any, limit: int) -> tuple[Any, ...]:
    if item is None:
        return items
    return (*items, item)[-limit:]
