"""The vehicle state machine, without any broker: docs/spec.md §2.2 rules in order, every mode."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from protocol.codec import canonical_bytes
from protocol.commands import build_command
from protocol.models import CommandType, Response
from protocol.signing import Signer, Verifier, generate_private_key
from protocol.timeutil import format_ts
from vehicle_sim import vehicle as vm
from vehicle_sim.behaviour import Behaviour, FlakyOutcome
from vehicle_sim.fleet import Mode, build_fleet

NOW = 1_795_000_000.0
SEED = 11
KEY = generate_private_key()
SIGNER = Signer(KEY)
CTX = vm.Context(SEED, Verifier(KEY.public_key()), Behaviour(busy_s=(10, 10), trip_s=(30, 30)))
SPEC = build_fleet(SEED, 1, {Mode.ONLINE: 1.0})[0]
TOURER = next(s for s in build_fleet(SEED, 50, {Mode.ONLINE: 1.0}) if s.model == "Tourer")
CARGO = next(s for s in build_fleet(SEED, 50, {Mode.ONLINE: 1.0}) if s.model == "Cargo")


def fresh(mode: Mode = Mode.ONLINE, spec: Any = SPEC) -> vm.Vehicle:
    return (
        vm.boot(spec, CTX.behaviour, SEED, NOW).vehicle
        if mode is Mode.ONLINE
        else (
            vm.set_mode(
                vm.boot(spec, CTX.behaviour, SEED, NOW).vehicle, mode, CTX.behaviour, SEED, NOW
            )
        ).vehicle
    )


def command(
    vin: str = SPEC.vin, ctype: CommandType = CommandType.ACTIVATE, **kw: Any
) -> dict[str, Any]:
    feature = kw.pop("feature", "climate_plus" if ctype in vm_feature_types() else None)
    activation = kw.pop("activation_id", "a-1" if ctype in vm_feature_types() else None)
    cmd = build_command(SIGNER, vin=vin, type=ctype, now=kw.pop("now", NOW), ttl_s=60,
                        feature=feature, activation_id=activation, **kw)  # fmt: skip
    return cmd.body


def vm_feature_types() -> set[CommandType]:
    return {CommandType.ACTIVATE, CommandType.DEACTIVATE}


def send(
    vehicle: vm.Vehicle,
    body: dict[str, Any] | bytes,
    seen: Mapping[str, vm.Respond | None] | None = None,
    now: float = NOW,
    correlation: bytes | None = None,
) -> vm.Transition:
    payload = body if isinstance(body, bytes) else canonical_bytes(body)
    arrival = vm.Arrival(payload, "resp/topic", correlation)
    return vm.on_command(vehicle, arrival, CTX, seen or {}, now)


def responses(transition: vm.Transition) -> list[dict[str, Any]]:
    return [json.loads(o.payload) for o in transition.outputs if isinstance(o, vm.Respond)]


def only_response(transition: vm.Transition) -> dict[str, Any]:
    found = responses(transition)
    assert len(found) == 1, transition.outputs
    Response.model_validate(found[0])  # every answer is valid per the wire schema
    return found[0]


# ------------------------------------------------------------------ validation rules, in order
def test_not_json_without_correlation_is_dropped() -> None:
    """Rule 1: unreadable payload and no command_id anywhere → no answer, counted."""
    t = send(fresh(), b"{not json")
    assert responses(t) == []
    assert vm.Dropped("malformed_unanswerable") in t.outputs


def test_not_json_with_correlation_is_nacked_malformed() -> None:
    """Rule 1: the command_id can be read from Correlation Data → nack/malformed."""
    r = only_response(send(fresh(), b"\xff\xfe", correlation=b"cid-9"))
    assert (r["status"], r["reason"], r["command_id"]) == ("nack", "malformed", "cid-9")


def test_missing_field_is_nacked_malformed_with_its_command_id() -> None:
    """Rule 1: valid JSON missing fields → nack/malformed echoing the command_id."""
    body = command()
    del body["expires_at"]
    r = only_response(send(fresh(), body))
    assert (r["reason"], r["command_id"], r["type"]) == (
        "malformed",
        body["command_id"],
        "activate",
    )


def test_activate_without_feature_is_malformed() -> None:
    """Rule 1: an activate must name its feature and activation."""
    r = only_response(send(fresh(), command(feature=None)))
    assert r["reason"] == "malformed"


def test_wrong_vin_is_checked_before_signature() -> None:
    """Rule 2 before rule 3: another VIN with a bad signature → wrong_vehicle."""
    other = TOURER.vin if TOURER.vin != SPEC.vin else CARGO.vin
    body = {**command(vin=other), "sig": "AAAA"}
    assert only_response(send(fresh(), body))["reason"] == "wrong_vehicle"


def test_tampered_command_fails_signature() -> None:
    """Rule 3: any change after signing → bad_signature."""
    body = {**command(), "feature": "autonomous_driving"}
    assert only_response(send(fresh(), body))["reason"] == "bad_signature"


def test_signature_from_another_key_fails() -> None:
    """Rule 3: a command signed by a key that is not the gateway's."""
    other = Signer(generate_private_key())
    body = other.sign({k: v for k, v in command().items() if k != "sig"})
    assert only_response(send(fresh(), body))["reason"] == "bad_signature"


def test_signature_is_checked_before_expiry() -> None:
    """Rule 3 before rule 4: an expired command with a bad signature → bad_signature."""
    body = {**command(now=NOW - 3600), "sig": "AAAA"}
    assert only_response(send(fresh(), body))["reason"] == "bad_signature"


def test_expired_command_is_nacked() -> None:
    """Rule 4: expires_at in the past → expired."""
    assert only_response(send(fresh(), command(now=NOW - 61)))["reason"] == "expired"


def test_command_issued_too_far_in_future_is_nacked() -> None:
    """Rule 4: issued_at more than 30 s ahead → expired; 29 s ahead is fine."""
    assert only_response(send(fresh(), command(now=NOW + 31)))["reason"] == "expired"
    assert only_response(send(fresh(), command(now=NOW + 29)))["status"] == "ack"


def test_duplicate_gets_identical_first_answer_and_acts_once() -> None:
    """Rule 5: the same command_id again → the first response byte for byte, no new action."""
    vehicle = fresh()
    body = command()
    first = send(vehicle, body)
    remembered = {o.command_id: o.response for o in first.outputs if isinstance(o, vm.Remember)}
    again = send(first.vehicle, body, seen=remembered, now=NOW + 5)
    first_payloads = [o.payload for o in first.outputs if isinstance(o, vm.Respond)]
    again_payloads = [o.payload for o in again.outputs if isinstance(o, vm.Respond)]
    assert again_payloads == first_payloads
    assert again.vehicle == first.vehicle  # no second state change
    assert not any(isinstance(o, vm.PublishState) for o in again.outputs)


# ------------------------------------------------------------------ acting
def test_activate_acks_and_publishes_new_state() -> None:
    """Online: activate → ack carrying the state with the feature active, seq + 1."""
    vehicle = fresh()
    t = send(vehicle, command(feature="climate_plus"))
    r = only_response(t)
    assert r["status"] == "ack" and r["reason"] is None
    assert r["state"]["active_features"] == ["climate_plus"]
    assert r["state"]["seq"] == vehicle.seq + 1
    assert any(isinstance(o, vm.PublishState) for o in t.outputs)


def test_activate_already_active_is_idempotent_ack() -> None:
    """Re-activating acks with no state change; so does deactivating an inactive feature."""
    active = send(fresh(), command(feature="climate_plus")).vehicle
    t = send(active, command(feature="climate_plus"))
    assert only_response(t)["status"] == "ack"
    assert t.vehicle.seq == active.seq
    t2 = send(fresh(), command(ctype=CommandType.DEACTIVATE, feature="climate_plus"))
    assert only_response(t2)["status"] == "ack"


def test_deactivate_removes_feature() -> None:
    """Deactivate switches an active feature off."""
    active = send(fresh(), command(feature="climate_plus")).vehicle
    t = send(active, command(ctype=CommandType.DEACTIVATE, feature="climate_plus"))
    assert only_response(t)["state"]["active_features"] == []


def test_feature_not_in_firmware_is_not_installed() -> None:
    """A feature the model's firmware lacks → nack/not_installed."""
    t = send(fresh(spec=CARGO), command(vin=CARGO.vin, feature="autonomous_driving"))
    assert only_response(t)["reason"] == "not_installed"


def test_busy_vehicle_nacks_with_retry_after_then_recovers() -> None:
    """Busy: nack/busy with retry_after_s = time left; after the busy period it acts."""
    vehicle = fresh(Mode.BUSY)
    assert vehicle.busy
    r = only_response(send(vehicle, command(now=NOW + 4), now=NOW + 4))
    assert (r["reason"], r["retry_after_s"]) == ("busy", 6.0)
    woke = vm.on_wake(vehicle, NOW + 10).vehicle
    assert not woke.busy
    assert only_response(send(woke, command(now=NOW + 11), now=NOW + 11))["status"] == "ack"


def test_busy_and_nack_modes_still_answer_status() -> None:
    """Busy and nack vehicles answer status and diagnostics (read-only) with an ack."""
    for mode in (Mode.BUSY, Mode.NACK, Mode.CONFLICT):
        r = only_response(send(fresh(mode), command(ctype=CommandType.STATUS)))
        assert r["status"] == "ack", mode


def test_nack_mode_is_internal_error() -> None:
    """Nack mode: activate → nack/internal_error, recorded in recent_errors."""
    t = send(fresh(Mode.NACK), command())
    assert only_response(t)["reason"] == "internal_error"
    assert t.vehicle.recent_errors


def test_conflict_mode_refuses_activate_only() -> None:
    """Conflict: activate → nack/conflict; deactivate → ack."""
    assert only_response(send(fresh(Mode.CONFLICT), command()))["reason"] == "conflict"
    t = send(fresh(Mode.CONFLICT), command(ctype=CommandType.DEACTIVATE))
    assert only_response(t)["status"] == "ack"


def test_timeout_mode_never_answers() -> None:
    """Timeout: receives and stays silent, status included."""
    for ctype in CommandType:
        t = send(fresh(Mode.TIMEOUT), command(ctype=ctype))
        assert responses(t) == []


def test_driving_vehicle_nacks_until_it_parks() -> None:
    """Driving: moving, nack/driving with the trip's time left; parked after the trip → ack."""
    vehicle = fresh(Mode.DRIVING)
    assert vehicle.moving and vehicle.gear == "D" and vehicle.speed_kmh > 0
    r = only_response(send(vehicle, command(now=NOW + 10), now=NOW + 10))
    assert (r["reason"], r["retry_after_s"]) == ("driving", 20.0)
    parked = vm.on_wake(vehicle, NOW + 30)
    assert not parked.vehicle.moving and parked.vehicle.gear == "P"
    assert any(isinstance(o, vm.PublishState) for o in parked.outputs)
    assert (
        only_response(send(parked.vehicle, command(now=NOW + 31), now=NOW + 31))["status"] == "ack"
    )


def test_diagnostics_report() -> None:
    """Diagnostics: ack carrying DTCs, battery, modem, uptime, firmware and model."""
    vehicle = send(fresh(Mode.NACK), command()).vehicle
    diag_cmd = command(ctype=CommandType.DIAGNOSTICS, now=NOW + 100)
    r = only_response(send(vehicle, diag_cmd, now=NOW + 100))
    diag = r["diagnostics"]
    assert diag["uptime_s"] == 100
    assert diag["firmware"] == SPEC.firmware and diag["model"] == SPEC.model
    assert diag["recent_errors"] and "internal_error" in diag["recent_errors"][0]


def test_flaky_outcomes_are_a_function_of_command_id() -> None:
    """Flaky: the same command_id always draws the same outcome; all outcomes occur."""
    vehicle = fresh(Mode.FLAKY)

    def outcome(cid: str) -> str:
        t = send(vehicle, command(command_id=cid))
        kinds = {type(o).__name__ for o in t.outputs}
        sent = [o for o in t.outputs if isinstance(o, vm.Respond)]
        if "GoOffline" in kinds:
            return FlakyOutcome.DISCONNECT
        if not sent:
            return FlakyOutcome.DROP
        if sent[0].copies == 2:
            return FlakyOutcome.DUPLICATE
        return FlakyOutcome.DELAY if sent[0].delay_s > 0 else FlakyOutcome.ANSWER

    first = [outcome(f"cmd-{i}") for i in range(200)]
    assert first == [outcome(f"cmd-{i}") for i in range(200)]
    assert set(first) == set(FlakyOutcome)


@pytest.mark.parametrize("mode", list(Mode))
def test_state_is_valid_vss_shape_in_every_mode(mode: Mode) -> None:
    """The published state validates against the wire schema in every mode."""
    from protocol.models import VehicleState

    vehicle = fresh(mode)
    state = VehicleState.model_validate(vm.state_dict(vehicle))
    assert state.online is (mode is not Mode.OFFLINE)
    assert state.at == format_ts(NOW)
