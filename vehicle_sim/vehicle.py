"""One simulated vehicle as a pure state machine.

``on_command(vehicle, arrival, ctx, seen, now)`` and ``on_wake(vehicle, now)`` take an
immutable ``Vehicle`` and return a ``Transition``: the next ``Vehicle`` plus the
outputs (responses, state publishes, timers...) for the runtime to carry out. No I/O
and no global state here, so every rule is unit-tested with a fixed ``now``.

Command handling follows docs/spec.md §2.2 in order: malformed → wrong vehicle → bad
signature → expired → duplicate (resend the first answer unchanged) → act by mode.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from protocol.codec import canonical_bytes, loads_object
from protocol.errors import InvalidSignature
from protocol.models import MAX_FUTURE_ISSUE_S, Command, CommandType, NackReason
from protocol.signing import Verifier
from protocol.timeutil import format_ts, parse_ts
from vehicle_sim.behaviour import Behaviour, FlakyOutcome, draw_flaky
from vehicle_sim.fleet import Mode, VehicleSpec
from vehicle_sim.rng import stable_rng

RECENT_ERRORS_KEPT = 5
UNKNOWN_BUSY_RETRY_S = 30.0  # retry hint when the busy period has no known end


@dataclass(frozen=True, slots=True)
class Vehicle:
    spec: VehicleSpec
    mode: Mode
    online: bool = True
    power: str = "off"
    moving: bool = False
    speed_kmh: float = 0.0
    gear: str = "P"
    busy: bool = False
    active_features: tuple[str, ...] = ()
    seq: int = 0
    changed_at: float = 0.0
    booted_at: float = 0.0
    busy_until: float | None = None
    trip_ends_at: float | None = None
    recent_errors: tuple[str, ...] = ()

    @property
    def vin(self) -> str:
        return self.spec.vin


# ---------------------------------------------------------------- events and outputs
@dataclass(frozen=True, slots=True)
class Arrival:
    """A command as it came off the wire."""

    payload: bytes
    response_topic: str | None = None
    correlation: bytes | None = None


@dataclass(frozen=True, slots=True)
class Respond:
    payload: bytes
    response_topic: str | None
    correlation: bytes | None
    delay_s: float = 0.0
    copies: int = 1


@dataclass(frozen=True, slots=True)
class PublishState:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Remember:
    """Record the answer to ``command_id`` (None: it was not answered) for duplicates."""

    command_id: str
    response: Respond | None


@dataclass(frozen=True, slots=True)
class DuplicateSeen:
    """A command_id already handled: its first answer (if any) is resent, nothing acts."""

    command_id: str


@dataclass(frozen=True, slots=True)
class ScheduleWake:
    at: float


@dataclass(frozen=True, slots=True)
class GoOffline:
    """Drop the connection (flaky) and come back ``for_s`` later."""

    for_s: float


@dataclass(frozen=True, slots=True)
class Dropped:
    """A command nobody can answer (no readable command_id), or not answered by mode."""

    why: str


Output = Respond | PublishState | Remember | DuplicateSeen | ScheduleWake | GoOffline | Dropped


@dataclass(frozen=True, slots=True)
class Transition:
    vehicle: Vehicle
    outputs: tuple[Output, ...] = ()


@dataclass(frozen=True, slots=True)
class Context:
    """What every vehicle of the fleet shares."""

    seed: int
    verifier: Verifier
    behaviour: Behaviour = field(default_factory=Behaviour)


# ---------------------------------------------------------------- wire forms
def state_dict(vehicle: Vehicle) -> dict[str, Any]:
    spec = vehicle.spec
    return {
        "vin": spec.vin,
        "model": spec.model,
        "firmware": spec.firmware,
        "online": vehicle.online,
        "power": vehicle.power,
        "moving": vehicle.moving,
        "speed_kmh": vehicle.speed_kmh,
        "gear": vehicle.gear,
        "busy": vehicle.busy,
        "installed_features": list(spec.installed_features),
        "active_features": list(vehicle.active_features),
        "seq": vehicle.seq,
        "at": format_ts(vehicle.changed_at),
    }


def state_payload(vehicle: Vehicle) -> bytes:
    return canonical_bytes(state_dict(vehicle))


def presence_payload(vin: str, online: bool, now: float) -> bytes:
    return canonical_bytes({"vin": vin, "online": online, "at": format_ts(now)})


def diagnostics_dict(vehicle: Vehicle, seed: int, now: float) -> dict[str, Any]:
    rng = stable_rng(seed, "diagnostics", vehicle.vin)
    dtcs = [rng.choice(("P0A80", "U0100", "B1325", "C0035"))] if rng.random() < 0.3 else []
    return {
        "dtcs": dtcs,
        "battery_v": round(rng.uniform(11.8, 12.8), 1),
        "modem": {"rssi_dbm": rng.randint(-105, -55)},
        "uptime_s": max(0, int(now - vehicle.booted_at)),
        "recent_errors": list(vehicle.recent_errors),
        "firmware": vehicle.spec.firmware,
        "model": vehicle.spec.model,
    }


def _response(
    vehicle: Vehicle,
    command_id: str,
    ctype: str | None,
    now: float,
    reason: NackReason | None = None,
    retry_after_s: float | None = None,
    diagnostics: dict[str, Any] | None = None,
    with_state: bool = True,
) -> bytes:
    return canonical_bytes(
        {
            "v": 1,
            "command_id": command_id,
            "vin": vehicle.vin,
            "type": ctype,
            "status": "nack" if reason else "ack",
            "reason": reason.value if reason else None,
            "retry_after_s": retry_after_s,
            "state": state_dict(vehicle) if with_state else None,
            "diagnostics": diagnostics,
            "at": format_ts(now),
        }
    )


# ---------------------------------------------------------------- life cycle
def boot(spec: VehicleSpec, behaviour: Behaviour, seed: int, now: float) -> Transition:
    """The vehicle at simulator start, in its initial mode."""
    vehicle = Vehicle(spec=spec, mode=spec.initial_mode, changed_at=now, booted_at=now)
    return set_mode(vehicle, spec.initial_mode, behaviour, seed, now)


def set_mode(
    vehicle: Vehicle, mode: Mode, behaviour: Behaviour, seed: int, now: float
) -> Transition:
    """Enter ``mode``: busy and driving vehicles draw how long that lasts."""
    rng = stable_rng(seed, "mode", vehicle.vin, mode.value, vehicle.seq)
    nxt = replace(vehicle, mode=mode, online=mode is not Mode.OFFLINE)
    outputs: list[Output] = []
    if mode is Mode.BUSY:
        until = now + behaviour.draw_busy_s(rng)
        nxt = replace(nxt, busy=True, busy_until=until)
        outputs.append(ScheduleWake(until))
    elif mode is Mode.DRIVING:
        nxt = start_trip(nxt, now, behaviour.draw_trip_s(rng), rng.uniform(30, 120))
        outputs.append(ScheduleWake(nxt.trip_ends_at or now))
    return _changed(vehicle, nxt, now, outputs)


def start_trip(vehicle: Vehicle, now: float, duration_s: float, speed_kmh: float) -> Vehicle:
    return replace(
        vehicle,
        power="on",
        moving=True,
        gear="D",
        speed_kmh=round(speed_kmh, 1),
        trip_ends_at=now + duration_s,
    )


def park(vehicle: Vehicle) -> Vehicle:
    return replace(vehicle, power="off", moving=False, gear="P", speed_kmh=0.0, trip_ends_at=None)


def on_wake(vehicle: Vehicle, now: float) -> Transition:
    """Timers: a trip ends (the vehicle parks), a busy period ends."""
    nxt = vehicle
    if vehicle.trip_ends_at is not None and now >= vehicle.trip_ends_at:
        nxt = park(nxt)
    if vehicle.busy_until is not None and now >= vehicle.busy_until:
        nxt = replace(nxt, busy=False, busy_until=None)
    return _changed(vehicle, nxt, now, [])


def patch(vehicle: Vehicle, now: float, **fields: Any) -> Transition:
    """Control surface: overwrite state fields (validated by the caller)."""
    return _changed(vehicle, replace(vehicle, **fields), now, [])


def _changed(before: Vehicle, after: Vehicle, now: float, outputs: list[Output]) -> Transition:
    """Bump ``seq`` and publish state when anything visible changed."""
    if state_dict(replace(after, seq=0, changed_at=0)) == state_dict(
        replace(before, seq=0, changed_at=0)
    ):
        return Transition(after, tuple(outputs))
    after = replace(after, seq=before.seq + 1, changed_at=now)
    return Transition(after, (*outputs, PublishState(state_payload(after))))


# ---------------------------------------------------------------- commands
def on_command(
    vehicle: Vehicle,
    arrival: Arrival,
    ctx: Context,
    seen: Mapping[str, Respond | None],
    now: float,
) -> Transition:
    """docs/spec.md §2.2, rules 1 to 6 in order."""
    try:
        body = loads_object(arrival.payload)
        command = Command.model_validate(body)
    except (ValueError, ValidationError):
        return _malformed(vehicle, arrival, now)

    def nack(reason: NackReason) -> Transition:
        payload = _response(vehicle, command.command_id, command.type.value, now, reason)
        return Transition(vehicle, (Respond(payload, arrival.response_topic, arrival.correlation),))

    if command.vin != vehicle.vin:
        return nack(NackReason.WRONG_VEHICLE)
    try:
        ctx.verifier.verify(body)
    except InvalidSignature:
        return nack(NackReason.BAD_SIGNATURE)
    if parse_ts(command.expires_at) < now or parse_ts(command.issued_at) > now + MAX_FUTURE_ISSUE_S:
        return nack(NackReason.EXPIRED)
    if command.command_id in seen:
        earlier = seen[command.command_id]
        marker = DuplicateSeen(command.command_id)
        return Transition(vehicle, (marker, earlier) if earlier else (marker,))
    return _act(vehicle, command, arrival, ctx, now)


def _malformed(vehicle: Vehicle, arrival: Arrival, now: float) -> Transition:
    command_id, ctype = _readable_id(arrival)
    if command_id is None:
        return Transition(vehicle, (Dropped("malformed_unanswerable"),))
    payload = _response(vehicle, command_id, ctype, now, NackReason.MALFORMED)
    return Transition(vehicle, (Respond(payload, arrival.response_topic, arrival.correlation),))


def _readable_id(arrival: Arrival) -> tuple[str | None, str | None]:
    """The command_id of a malformed command: from the JSON if any, else Correlation Data."""
    try:
        body = loads_object(arrival.payload)
    except ValueError:
        body = {}
    command_id = body.get("command_id")
    ctype = body.get("type") if body.get("type") in set(CommandType) else None
    if isinstance(command_id, str) and 0 < len(command_id) <= 128:
        return command_id, ctype
    if arrival.correlation:
        try:
            return arrival.correlation.decode(), ctype
        except UnicodeDecodeError:
            return None, None
    return None, None


def _act(
    vehicle: Vehicle, command: Command, arrival: Arrival, ctx: Context, now: float
) -> Transition:
    """Rule 6: act by type, mode and state; remember the answer for duplicates."""
    if vehicle.mode in (Mode.TIMEOUT, Mode.OFFLINE):
        return Transition(vehicle, (Remember(command.command_id, None), Dropped(vehicle.mode)))
    if vehicle.mode is not Mode.FLAKY:  # only flaky vehicles draw per command
        return _answer(vehicle, command, arrival, ctx, now, FlakyOutcome.ANSWER, None)
    rng = stable_rng(ctx.seed, vehicle.vin, command.command_id)
    flaky = draw_flaky(ctx.behaviour, rng)
    if flaky in (FlakyOutcome.DROP, FlakyOutcome.DISCONNECT):
        outputs: tuple[Output, ...] = (Remember(command.command_id, None), Dropped(flaky.value))
        if flaky is FlakyOutcome.DISCONNECT:
            outputs += (GoOffline(ctx.behaviour.draw_reconnect_s(rng)),)
        return Transition(vehicle, outputs)

    return _answer(vehicle, command, arrival, ctx, now, flaky, rng)


def _answer(
    vehicle: Vehicle,
    command: Command,
    arrival: Arrival,
    ctx: Context,
    now: float,
    flaky: FlakyOutcome,
    rng: random.Random | None,
) -> Transition:
    result = _perform(vehicle, command, ctx, now)
    delay_s = 0.0
    if flaky is FlakyOutcome.DELAY and rng is not None:
        delay_s = ctx.behaviour.draw_delay_s(rng)
    respond = Respond(
        result.payload,
        arrival.response_topic,
        arrival.correlation,
        delay_s=delay_s,
        copies=2 if flaky is FlakyOutcome.DUPLICATE else 1,
    )
    outputs = (*result.outputs, Remember(command.command_id, respond), respond)
    return Transition(result.vehicle, outputs)


@dataclass(frozen=True, slots=True)
class _Performed:
    vehicle: Vehicle
    payload: bytes
    outputs: tuple[Output, ...]


def _perform(vehicle: Vehicle, command: Command, ctx: Context, now: float) -> _Performed:
    ctype = command.type
    if ctype is CommandType.STATUS:
        return _Performed(vehicle, _response(vehicle, command.command_id, ctype.value, now), ())
    if ctype is CommandType.DIAGNOSTICS:
        diag = diagnostics_dict(vehicle, ctx.seed, now)
        payload = _response(vehicle, command.command_id, ctype.value, now, diagnostics=diag)
        return _Performed(vehicle, payload, ())
    refusal = _refusal(vehicle, command, now)
    if refusal is not None:
        reason, retry_after = refusal
        errors = (*vehicle.recent_errors, f"{format_ts(now)} {ctype.value} {reason.value}")
        nxt = replace(vehicle, recent_errors=errors[-RECENT_ERRORS_KEPT:])
        payload = _response(nxt, command.command_id, ctype.value, now, reason, retry_after)
        return _Performed(nxt, payload, ())
    feature = command.feature or ""
    active = set(vehicle.active_features)
    if ctype is CommandType.ACTIVATE:
        active.add(feature)
    else:
        active.discard(feature)
    transition = _changed(vehicle, replace(vehicle, active_features=tuple(sorted(active))), now, [])
    payload = _response(transition.vehicle, command.command_id, ctype.value, now)
    return _Performed(transition.vehicle, payload, transition.outputs)


def _refusal(
    vehicle: Vehicle, command: Command, now: float
) -> tuple[NackReason, float | None] | None:
    """Why an activate/deactivate is refused now, with the retry hint; None to act."""
    if vehicle.busy:
        until = vehicle.busy_until
        if until is None or math.isinf(until):
            return NackReason.BUSY, UNKNOWN_BUSY_RETRY_S
        return NackReason.BUSY, float(max(1, math.ceil(until - now)))
    if vehicle.mode is Mode.NACK:
        return NackReason.INTERNAL_ERROR, None
    if vehicle.moving:
        ends = vehicle.trip_ends_at
        return NackReason.DRIVING, float(max(1, math.ceil(ends - now))) if ends else None
    if vehicle.mode is Mode.CONFLICT and command.type is CommandType.ACTIVATE:
        return NackReason.CONFLICT, None
    if command.feature not in vehicle.spec.installed_features:
        return NackReason.NOT_INSTALLED, None
    return None
