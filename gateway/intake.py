"""What the gateway accepts from a vehicle (docs/spec.md §2.3), as pure functions.

Everything on ``responses``, ``state`` and ``presence`` comes from a car, and a car
with valid credentials may be broken or hostile. Before anything reaches Redis, the
twin or an activation, a message must be:

- small and shallow JSON with finite numbers (``protocol.codec.loads_object``);
- valid against the wire schema (``protocol.models``): feature names of the
  contract's pattern (docs/spec.md), at most ``MAX_FEATURES`` of them, active ⊆
  installed, ``seq`` bounded, printable short strings, a command_id of the id alphabet;
- about the vehicle whose topic it came on (the topic's VIN, the answer's
  Correlation Data).

A refusal is a ``PayloadRejected`` whose ``reason`` comes from ``REASONS``: callers
count it with that label (bounded) and never log the payload.

Vehicle clocks are not trusted either: every vehicle timestamp is clamped into
``[received - MAX_PAST_S, received]``. A presence dated 2096 therefore counts as "now"
and the next real presence outranks it, instead of wedging the twin for 70 years. The
clamped time replaces ``at`` in the stored bodies, so the twin, the API and the
diagnostics package all see the same sane time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from protocol.codec import loads_object
from protocol.errors import PayloadRejected
from protocol.models import Presence, Response, VehicleState
from protocol.timeutil import format_ts, parse_ts

M = TypeVar("M", VehicleState, Presence, Response)
MAX_PAST_S = 365 * 86_400  # older than this is "very old"; the exact value never matters
MAX_CORRELATION_BYTES = 128
# Every reason a vehicle message is refused (the label values of
# caas_gateway_inbound_rejected_total).
REASONS = (
    "topic",  # not a vehicle topic of ours, or not a VIN in it
    "too_large",
    "too_deep",
    "not_json",
    "non_finite",
    "not_object",
    "schema",  # fails the wire schema (protocol.models)
    "wrong_vin",  # about another vehicle than the topic's
    "correlation",  # Correlation Data that is not this answer's command_id
    "backlog",  # the worker's inbound backlog is full (never reached with backpressure)
)


@dataclass(frozen=True, slots=True)
class StateIn:
    body: dict[str, Any]  # validated VehicleState, ``at`` clamped
    seq: int
    at: float  # clamped vehicle time of the state's last change


@dataclass(frozen=True, slots=True)
class PresenceIn:
    body: dict[str, Any]
    online: bool
    at: float


@dataclass(frozen=True, slots=True)
class ResponseIn:
    validated: Response
    command_id: str
    status: str
    reason: str | None
    retry_after_s: float | None
    state: StateIn | None
    diagnostics: dict[str, Any] | None
    at: float

    def body(self) -> dict[str, Any]:
        """The answer as a live query hands it back (validated, times clamped); built
        only then: an activation's answer never needs it."""
        body = self.validated.model_dump(mode="json")
        body.update(at=format_ts(self.at), state=self.state.body if self.state else None)
        return body


def clamp(vehicle_at: float, recv_at: float) -> float:
    """A vehicle's timestamp, believed only within ``[recv_at - MAX_PAST_S, recv_at]``."""
    return min(recv_at, max(recv_at - MAX_PAST_S, vehicle_at))


def read_state(vin: str, payload: bytes, recv_at: float) -> StateIn:
    state = _validate(VehicleState, loads_object(payload))
    if state.vin != vin:
        raise PayloadRejected("wrong_vin", "state of another vehicle")
    return _state_in(state, recv_at)


def read_presence(vin: str, payload: bytes, recv_at: float) -> PresenceIn:
    presence = _validate(Presence, loads_object(payload))
    if presence.vin != vin:
        raise PayloadRejected("wrong_vin", "presence of another vehicle")
    at = clamp(parse_ts(presence.at), recv_at)
    body = {**presence.model_dump(mode="json"), "at": format_ts(at)}
    return PresenceIn(body, presence.online, at)


def read_response(
    vin: str, payload: bytes, correlation: bytes | None, recv_at: float
) -> ResponseIn:
    response = _validate(Response, loads_object(payload))
    if response.vin != vin or (response.state is not None and response.state.vin != vin):
        raise PayloadRejected("wrong_vin", "answer about another vehicle")
    if correlation is not None and correlation != response.command_id.encode():
        raise PayloadRejected("correlation", "Correlation Data is not the command_id")
    at = clamp(parse_ts(response.at), recv_at)
    state = _state_in(response.state, recv_at) if response.state else None
    diagnostics = response.diagnostics.model_dump(mode="json") if response.diagnostics else None
    return ResponseIn(
        validated=response,
        command_id=response.command_id,
        status=response.status.value,
        reason=response.reason.value if response.reason else None,
        retry_after_s=response.retry_after_s,
        state=state,
        diagnostics=diagnostics,
        at=at,
    )


def check_correlation(correlation: bytes | None) -> None:
    """Cheap checks at the socket, before a message is queued."""
    if correlation is not None and len(correlation) > MAX_CORRELATION_BYTES:
        raise PayloadRejected("correlation", "Correlation Data too long")


def _state_in(state: VehicleState, recv_at: float) -> StateIn:
    at = clamp(parse_ts(state.at), recv_at)
    return StateIn({**state.model_dump(mode="json"), "at": format_ts(at)}, state.seq, at)


def _validate(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][:3])
        raise PayloadRejected("schema", f"{where}: {first['type']}") from None
