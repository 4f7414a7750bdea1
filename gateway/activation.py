"""The Activation record (docs/spec.md §3) as immutable dataclasses, and its JSON forms.

``to_record``/``from_record`` is the stored form (floats for times, internal fields
included); ``to_public`` is the API form (RFC 3339 times, internals left out).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

import orjson

from gateway.policy import RetryPolicy
from protocol.timeutil import format_ts


class State(StrEnum):
    QUEUED = "QUEUED"
    WAITING_VEHICLE = "WAITING_VEHICLE"
    IN_PROGRESS = "IN_PROGRESS"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


class Phase(StrEnum):
    """What the activation waits for (internal; finer than ``State``)."""

    START = "start"  # QUEUED: the first attempt starts at due_at
    WAIT = "wait"  # WAITING_VEHICLE: readiness (twin change or lock release) until due_at
    PROBE = "probe"  # WAITING_VEHICLE: status query because the twin is stale
    AWAIT_ACK = "await_ack"  # IN_PROGRESS: activate/deactivate sent, ack timeout at due_at
    TIMEOUT_STATUS = "timeout_status"  # IN_PROGRESS: status query after an ack timeout
    BACKOFF = "backoff"  # RETRY_SCHEDULED: next attempt at due_at
    FINAL_STATUS = "final_status"  # IN_PROGRESS: status query of the diagnostics package
    FINAL_DIAG = "final_diag"  # IN_PROGRESS: diagnostics query of the diagnostics package
    DONE = "done"


class Action(StrEnum):
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"


class FailureCategory(StrEnum):
    TRANSIENT_CONNECTIVITY = "transient_connectivity"
    VEHICLE_STATE = "vehicle_state"
    CONFIGURATION_CONFLICT = "configuration_conflict"
    PERSISTENT_IOT_FAILURE = "persistent_iot_failure"
    TIMEOUT = "timeout"


class AttemptResult(StrEnum):
    SUCCESS = "SUCCESS"
    FAILED_RETRY = "FAILED_RETRY"
    FAILED_ESCALATE = "FAILED_ESCALATE"


@dataclass(frozen=True, slots=True)
class Attempt:
    n: int
    command_id: str | None
    at: float
    vehicle_state: dict[str, Any] | None
    command_sent: bool
    response_code: str | None = None  # ack | nack | timeout | not_ready
    response_message: str | None = None
    result: AttemptResult | None = None
    reason: str | None = None  # the nack reason, kept for metrics and categories


@dataclass(frozen=True, slots=True)
class Pending:
    """The one command this activation waits an answer for."""

    command_id: str
    type: str
    sent_at: float


@dataclass(frozen=True, slots=True)
class Activation:
    activation_id: str
    vin: str
    feature: str
    action: Action
    policy: RetryPolicy
    created_at: float
    updated_at: float
    state: State = State.QUEUED
    phase: Phase = Phase.START
    failure_category: FailureCategory | None = None
    attempts: tuple[Attempt, ...] = ()
    next_attempt_at: float | None = None
    diagnostics: dict[str, Any] | None = None
    origin: str = "api"
    # internals
    due_at: float | None = None
    current: int = 0  # number of the attempt under way (0: none started)
    wait_deadline: float | None = None
    waiting_for: str | None = None  # why the vehicle is not ready (shown in not_ready)
    holds_lock: bool = False
    waiting: bool = False
    probed: bool = False
    probed_at: float | None = None  # when this attempt's status probe went out
    pending: Pending | None = None
    sent_ids: tuple[str, ...] = ()  # activate/deactivate command ids (late acks count)
    expired_nacks: int = 0
    snapshots: tuple[dict[str, Any], ...] = ()
    iot_errors: tuple[dict[str, Any], ...] = ()
    rtts_ms: tuple[float, ...] = ()
    final_state: dict[str, Any] | None = None
    # A feature command and the status query after it both went unanswered at this
    # time: the vehicle may have acted. Cleared by any answer carrying its state.
    unanswered_at: float | None = None
    final_deadline: float | None = None  # asking for the final status ends here
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_record(self) -> dict[str, Any]:
        # field by field from names computed once (dataclasses.fields() and a type test
        # per field cost more than the rest of a commit's Python work); tuples stay
        # tuples, enums stay enums: both JSON writers write them as arrays and strings
        out = {name: getattr(self, name) for name in _PLAIN_FIELDS}
        out["policy"] = self.policy.to_dict()
        out["attempts"] = [_attempt_record(a) for a in self.attempts]
        pending = self.pending
        out["pending"] = None if pending is None else {
            "command_id": pending.command_id, "type": pending.type, "sent_at": pending.sent_at,
        }  # fmt: skip
        return out

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Activation:
        values = {name: data[name] for name in _PLAIN_FIELDS if name in data}
        values["policy"] = RetryPolicy.from_dict(data["policy"])
        values["action"] = Action(data["action"])
        values["state"] = State(data["state"])
        values["phase"] = Phase(data["phase"])
        category = data.get("failure_category")
        values["failure_category"] = FailureCategory(category) if category else None
        values["attempts"] = tuple(_attempt_from(a) for a in data.get("attempts", ()))
        pending = data.get("pending")
        values["pending"] = Pending(**pending) if pending else None
        for name in _TUPLE_FIELDS:
            values[name] = tuple(data.get(name, ()))
        return cls(**values)

    def to_doc(self) -> bytes:
        """The stored form as JSON (what Redis keeps under ``doc``)."""
        return orjson.dumps(self.to_record())

    @classmethod
    def from_doc(cls, doc: str | bytes) -> Activation:
        return cls.from_record(orjson.loads(doc))

    def to_public(self) -> dict[str, Any]:
        return {
            "activation_id": self.activation_id,
            "vin": self.vin,
            "feature": self.feature,
            "action": self.action.value,
            "state": self.state.value,
            "failure_category": self.failure_category.value if self.failure_category else None,
            "attempts": [_attempt_public(a) for a in self.attempts],
            "next_attempt_at": _ts(self.next_attempt_at),
            "policy": self.policy.to_dict(),
            "diagnostics": self.diagnostics,
            "created_at": format_ts(self.created_at),
            "updated_at": format_ts(self.updated_at),
            "origin": self.origin,
        }


def _ts(value: float | None) -> str | None:
    return None if value is None else format_ts(value)


def _attempt_record(a: Attempt) -> dict[str, Any]:
    return {name: getattr(a, name) for name in _ATTEMPT_FIELDS}


def _attempt_from(data: dict[str, Any]) -> Attempt:
    values = dict(data)
    values["result"] = AttemptResult(values["result"]) if values.get("result") else None
    return Attempt(**values)


def _attempt_public(a: Attempt) -> dict[str, Any]:
    return {
        "n": a.n,
        "command_id": a.command_id,
        "at": format_ts(a.at),
        "vehicle_state": a.vehicle_state,
        "command_sent": a.command_sent,
        "response_code": a.response_code,
        "response_message": a.response_message,
        "result": a.result.value if a.result else None,
    }


_ATTEMPT_FIELDS = tuple(f.name for f in fields(Attempt))
_TUPLE_FIELDS = ("sent_ids", "snapshots", "iot_errors", "rtts_ms")
# stored as they are (converted on the way in by from_record where they are not)
_PLAIN_FIELDS = tuple(
    f.name for f in fields(Activation) if f.name not in ("policy", "attempts", "pending")
)
