"""Each path of the activation state machine against the real broker, Redis, and
either the fleet simulator or a scripted SPEC-following vehicle."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

import pytest

from gateway.policy import RetryPolicy, backoff_bounds_s
from launcher.stack import LocalStack
from protocol.signing import Verifier, load_public_key
from protocol.timeutil import parse_ts
from protocol.topics import Topics
from tests.conftest import SimFactory
from tests.gateway.conftest import GatewayFactory
from tests.gateway.vehicle import ScriptedVehicle
from vehicle_sim.behaviour import Behaviour
from vehicle_sim.fleet import Mode

pytestmark = pytest.mark.integration


def scripted(stack: LocalStack, topics: Topics, script: list[str], **kw: object) -> ScriptedVehicle:
    return ScriptedVehicle(stack.broker.fleet_address(), topics, script, **kw)  # type: ignore[arg-type]


@pytest.mark.timeout(30)
async def test_success_first_try(make_gateway: GatewayFactory, make_sim: SimFactory) -> None:
    """Online vehicle: one activate, SUCCEEDED with one SUCCESS attempt, events in order."""
    async with make_sim(vehicles=2) as sim, make_gateway() as gw:
        spec = sim.specs[0]
        feature = spec.installed_features[0]
        created = await gw.activate(spec.vin, feature)
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "SUCCEEDED"
        assert [a["result"] for a in final["attempts"]] == ["SUCCESS"]
        assert final["attempts"][0]["command_sent"] is True
        assert feature in sim.runtime.vehicle(spec.vin).active_features
        assert sim.runtime.stats.received["activate"] == 1
        types = [e["type"] for e in await gw.events()]
        assert types.index("activation.accepted") < types.index("activation.succeeded")


@pytest.mark.timeout(30)
async def test_busy_nack_then_success(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """A busy nack is retried after the backoff; the second attempt succeeds."""
    async with scripted(stack, topics, ["nack:busy", "ack"]) as car, make_gateway() as gw:
        created = await gw.activate(car.vin, "climate_plus")
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "SUCCEEDED"
        assert [a["result"] for a in final["attempts"]] == ["FAILED_RETRY", "SUCCESS"]
        assert final["attempts"][0]["response_message"] == "busy"
        assert len(car.feature_commands()) == 2
        ids = {c.body["command_id"] for c in car.feature_commands()}
        assert len(ids) == 2, "a retry is a fresh command"
        assert [c.body["attempt"] for c in car.feature_commands()] == [1, 2]


@pytest.mark.timeout(30)
async def test_busy_nack_retry_waits_for_retry_after(
    make_gateway: GatewayFactory, make_sim: SimFactory
) -> None:
    """A simulated vehicle busy for 2 s more than its twin says nacks busy with
    retry_after_s 2: the retry waits those 2 s (not the 0.05 s backoff) and succeeds."""
    async with make_sim(vehicles=1) as sim, make_gateway(max_backoff_s=5.0) as gw:
        spec = sim.specs[0]
        runtime = sim.runtime
        # busy without a state report (as if that message were lost): the twin says ready
        until = runtime.clock.now() + 2.0
        runtime.vehicles[spec.vin] = replace(runtime.vehicle(spec.vin), busy=True, busy_until=until)
        runtime.schedule_wake(spec.vin, until)
        created = await gw.activate(spec.vin, spec.installed_features[0])
        failed = await gw.wait_event(lambda e: e["type"] == "activation.attempt_failed")
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "SUCCEEDED"
        assert [a["result"] for a in final["attempts"]] == ["FAILED_RETRY", "SUCCESS"]
        assert final["attempts"][0]["response_message"] == "busy"
        gap = parse_ts(failed["data"]["next_attempt_at"]) - parse_ts(failed["at"])
        assert 1.99 <= gap <= 2.01, gap  # ceil(2 s - the time to the nack) = 2
        assert runtime.stats.answered["nack/busy"] == 1, runtime.stats.answered
        assert runtime.stats.received["activate"] == 2


@pytest.mark.timeout(30)
async def test_commands_are_signed_mqtt5_requests(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """Commands are signed MQTT 5 requests: Response Topic, Correlation Data, Expiry."""
    verifier = Verifier(load_public_key(stack.public_key_path))
    async with scripted(stack, topics, ["ack"]) as car, make_gateway(ack_timeout_s=3.0) as gw:
        created = await gw.activate(car.vin, "climate_plus")
        await gw.wait_terminal(created["activation_id"])
        assert car.commands
        for command in car.commands:
            verifier.verify(command.body)
            assert command.correlation == command.body["command_id"].encode()
            assert command.response_topic == topics.responses(car.vin)
            assert command.expiry_s is not None and command.expiry_s >= 1
        activate = car.feature_commands()[0]
        assert activate.body["activation_id"] == created["activation_id"]
        ttl = parse_ts(activate.body["expires_at"]) - parse_ts(activate.body["issued_at"])
        assert ttl == pytest.approx(3.0, abs=0.002)
        assert activate.expiry_s in (2, 3)
        statuses = car.feature_commands("status")
        assert all(s.body["feature"] is None and s.body["activation_id"] is None for s in statuses)


@pytest.mark.timeout(30)
async def test_busy_vehicle_waits_for_readiness(
    make_gateway: GatewayFactory, make_sim: SimFactory
) -> None:
    """A twin that says busy holds the command back until the vehicle is free (no nack)."""
    behaviour = Behaviour(busy_s=(1.0, 1.0))
    async with (
        make_sim(vehicles=1, mix={Mode.BUSY: 1}, behaviour=behaviour) as sim,
        make_gateway() as gw,
    ):
        vin = sim.specs[0].vin
        created = await gw.activate(vin, sim.specs[0].installed_features[0])
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "SUCCEEDED"
        assert len(final["attempts"]) == 1
        assert sim.runtime.stats.answered["ack"] >= 1
        assert not any(k.startswith("nack") for k in sim.runtime.stats.answered)


@pytest.mark.timeout(30)
async def test_driving_until_parked(make_gateway: GatewayFactory, make_sim: SimFactory) -> None:
    """A driving vehicle gets no activate until it parks; then one activate succeeds."""
    async with make_sim(vehicles=1) as sim, make_gateway() as gw:
        spec = sim.specs[0]
        sim.runtime.start_trip(spec.vin, duration_s=1.0)
        await asyncio.sleep(0.1)
        created = await gw.activate(spec.vin, spec.installed_features[0])
        await gw.wait_event(lambda e: e["type"] == "activation.accepted", timeout_s=5)
        await asyncio.sleep(0.4)
        waiting = await gw.get(created["activation_id"])
        assert waiting["state"] == "WAITING_VEHICLE"
        assert sim.runtime.stats.received["activate"] == 0
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "SUCCEEDED"
        assert final["attempts"][0]["vehicle_state"]["gear"] == "P"
        assert sim.runtime.stats.received["activate"] == 1


@pytest.mark.timeout(30)
async def test_offline_then_online_within_ready_wait(
    make_gateway: GatewayFactory, make_sim: SimFactory
) -> None:
    """Offline vehicle: the activation waits, and goes out as soon as presence says online."""
    async with (
        make_sim(vehicles=1, mix={Mode.OFFLINE: 1}) as sim,
        make_gateway(ready_wait_s=5.0) as gw,
    ):
        spec = sim.specs[0]
        created = await gw.activate(spec.vin, spec.installed_features[0])
        await asyncio.sleep(0.7)
        assert (await gw.get(created["activation_id"]))["state"] == "WAITING_VEHICLE"
        sim.runtime.set_mode(spec.vin, Mode.ONLINE)
        online_at = asyncio.get_running_loop().time()
        final = await gw.wait_terminal(created["activation_id"])
        took = asyncio.get_running_loop().time() - online_at
        assert final["state"] == "SUCCEEDED"
        assert len(final["attempts"]) == 1
        assert took < 2.0, "woken by the presence change, not by the deadline"


@pytest.mark.timeout(30)
async def test_offline_past_ready_wait_fails_not_ready(
    make_gateway: GatewayFactory, make_sim: SimFactory
) -> None:
    """Still offline after ready_wait_s: not_ready attempts, then FAILED transient_connectivity."""
    async with (
        make_sim(vehicles=1, mix={Mode.OFFLINE: 1}) as sim,
        make_gateway(ready_wait_s=0.3, max_attempts=2) as gw,
    ):
        spec = sim.specs[0]
        created = await gw.activate(spec.vin, spec.installed_features[0])
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "FAILED"
        assert final["failure_category"] == "transient_connectivity"
        codes = [a["response_code"] for a in final["attempts"]]
        assert codes == ["not_ready", "not_ready"]
        assert not any(a["command_sent"] for a in final["attempts"])


@pytest.mark.timeout(30)
async def test_timeout_then_status_shows_active(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """Vehicle acts but never answers: the status query shows it active → SUCCEEDED, no resend."""
    async with scripted(stack, topics, ["silent"]) as car, make_gateway() as gw:
        created = await gw.activate(car.vin, "climate_plus")
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "SUCCEEDED"
        assert len(car.feature_commands()) == 1
        attempt = final["attempts"][0]
        assert attempt["response_code"] == "timeout"
        assert attempt["result"] == "SUCCESS"


@pytest.mark.timeout(30)
async def test_timeout_without_effect_is_retried(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """No answer and the status shows nothing changed: a fresh command is sent."""
    async with scripted(stack, topics, ["ignore", "ack"]) as car, make_gateway() as gw:
        created = await gw.activate(car.vin, "climate_plus")
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "SUCCEEDED"
        assert [a["response_code"] for a in final["attempts"]] == ["timeout", "ack"]
        assert len(car.feature_commands()) == 2


@pytest.mark.timeout(30)
async def test_conflict_escalates_at_once(
    make_gateway: GatewayFactory, make_sim: SimFactory
) -> None:
    """A conflict nack is terminal: one attempt, FAILED configuration_conflict, diagnostics."""
    async with make_sim(vehicles=1, mix={Mode.CONFLICT: 1}) as sim, make_gateway() as gw:
        spec = sim.specs[0]
        created = await gw.activate(spec.vin, spec.installed_features[0])
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "FAILED"
        assert final["failure_category"] == "configuration_conflict"
        assert [a["result"] for a in final["attempts"]] == ["FAILED_ESCALATE"]
        assert sim.runtime.stats.received["activate"] == 1
        assert final["diagnostics"]["vehicle_diagnostics"]["model"] == spec.model


@pytest.mark.timeout(30)
async def test_all_attempts_exhausted(make_gateway: GatewayFactory, make_sim: SimFactory) -> None:
    """internal_error every time: all attempts, then diagnostics and activation.failed."""
    async with make_sim(vehicles=1, mix={Mode.NACK: 1}) as sim, make_gateway() as gw:
        spec = sim.specs[0]
        created = await gw.activate(spec.vin, spec.installed_features[0])
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "FAILED"
        assert final["failure_category"] == "persistent_iot_failure"
        results = [a["result"] for a in final["attempts"]]
        assert results == ["FAILED_RETRY", "FAILED_RETRY", "FAILED_ESCALATE"]
        package = final["diagnostics"]
        assert package["model"] == spec.model
        assert package["firmware"] == spec.firmware
        assert package["feature"] == spec.installed_features[0]
        assert [e["reason"] for e in package["iot_errors"]] == ["internal_error"] * 3
        assert package["final_status"]["vin"] == spec.vin
        assert package["vehicle_diagnostics"]["battery_v"] > 0
        assert package["rtt"]["count"] >= 5  # 3 activates + status + diagnostics
        assert len(package["state_snapshots"]) >= 3
        events = await gw.events()
        failed = [e for e in events if e["type"] == "activation.failed"]
        assert len(failed) == 1
        assert failed[0]["data"]["failure_category"] == "persistent_iot_failure"
        assert failed[0]["data"]["diagnostics"]["attempts"] == final["attempts"]
        assert Counter(e["type"] for e in events)["activation.attempt_failed"] == 3


@pytest.mark.timeout(30)
async def test_backoff_spacing_within_jitter(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """Retries start initial × mult^(k−1) ± jitter after the failed attempt's answer."""
    retry = {"initial_backoff_s": 0.3, "backoff_multiplier": 2.0, "max_attempts": 4,
             "jitter_ratio": 0.2, "status_query_timeout_s": 5.0}  # fmt: skip
    script = ["nack:busy", "nack:busy", "nack:busy", "ack"]
    async with scripted(stack, topics, script) as car, make_gateway(**retry) as gw:
        created = await gw.activate(car.vin, "climate_plus")
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "SUCCEEDED"
        sends = [c.at for c in car.feature_commands()]
        assert len(sends) == 4
        policy = RetryPolicy(**{**final["policy"]})
        for k in (1, 2, 3):
            low, high = backoff_bounds_s(policy, k)
            gap = sends[k] - sends[k - 1]
            assert low <= gap <= high + 0.08, (k, gap, low, high)


@pytest.mark.timeout(30)
async def test_duplicate_responses_act_once(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """Every answer delivered twice: one SUCCEEDED, one succeeded event, one attempt."""
    async with scripted(stack, topics, ["dup"]) as car, make_gateway() as gw:
        created = await gw.activate(car.vin, "climate_plus")
        final = await gw.wait_terminal(created["activation_id"])
        await asyncio.sleep(0.3)  # let the duplicate arrive and be ignored
        assert final["state"] == "SUCCEEDED"
        events = await gw.events()
        assert Counter(e["type"] for e in events)["activation.succeeded"] == 1
        assert len((await gw.get(created["activation_id"]))["attempts"]) == 1


@pytest.mark.timeout(30)
async def test_late_ack_during_backoff_succeeds(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """An ack that comes after the ack timeout still counts: the vehicle did act."""
    retry = {"ack_timeout_s": 0.3, "status_query_timeout_s": 0.3, "initial_backoff_s": 2.0,
             "max_backoff_s": 4.0}  # fmt: skip
    async with (
        scripted(stack, topics, ["late:0.9"], status_answers=1) as car,
        make_gateway(**retry) as gw,
    ):
        created = await gw.activate(car.vin, "climate_plus")
        final = await gw.wait_terminal(created["activation_id"], timeout_s=5)
        assert final["state"] == "SUCCEEDED"
        assert len(car.feature_commands()) == 1, "succeeded before the retry was due"


@pytest.mark.timeout(30)
async def test_late_ack_after_failure_is_reconciled(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """A feature that lands after its activation FAILED is switched off (divergence)."""
    retry = {"ack_timeout_s": 0.3, "status_query_timeout_s": 0.3, "max_attempts": 1,
             "outcome_wait_s": 0.3}  # fmt: skip
    async with (
        scripted(stack, topics, ["late:1.5"], status_answers=1) as car,
        make_gateway(**retry) as gw,
    ):
        created = await gw.activate(car.vin, "climate_plus")
        final = await gw.wait_terminal(created["activation_id"], timeout_s=5)
        assert final["state"] == "FAILED"
        assert final["failure_category"] == "timeout"
        car.status_answers = None
        divergence = await gw.wait_event(lambda e: e["type"] == "feature.divergence", 5)
        assert divergence["data"]["feature"] == "climate_plus"
        fix = divergence["data"]["activation_id"]
        fixed = await gw.wait_terminal(fix, timeout_s=5)
        assert fixed["state"] == "SUCCEEDED"
        assert fixed["action"] == "deactivate"
        assert "climate_plus" not in car.active
        assert (await gw.get(created["activation_id"]))["state"] == "FAILED"


@pytest.mark.timeout(30)
async def test_late_ack_within_outcome_wait_succeeds(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """The last attempt's ack and status answers are lost, the vehicle did act: the
    gateway keeps asking for outcome_wait_s, and the late ack makes it SUCCEED, not
    FAILED-then-switched-off."""
    retry = {"ack_timeout_s": 0.3, "status_query_timeout_s": 0.3, "max_attempts": 1,
             "outcome_wait_s": 5.0}  # fmt: skip
    async with (
        scripted(stack, topics, ["late:1.5"], status_answers=1) as car,
        make_gateway(**retry) as gw,
    ):
        created = await gw.activate(car.vin, "climate_plus")
        final = await gw.wait_terminal(created["activation_id"], timeout_s=5)
        assert final["state"] == "SUCCEEDED"
        assert "climate_plus" in car.active
        assert not [e for e in await gw.events() if e["type"] == "feature.divergence"]


@pytest.mark.timeout(30)
async def test_malformed_responses_are_dropped(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """Garbage answers are counted by reason and ignored; the status query settles the
    activation."""
    async with scripted(stack, topics, ["garbage"]) as car, make_gateway() as gw:
        created = await gw.activate(car.vin, "climate_plus")
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "SUCCEEDED"
        assert final["attempts"][0]["response_code"] == "timeout"
        metrics = (await gw.client.get("/metrics")).text
        rejected = {
            line.split("{")[1].split("}")[0]: float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("caas_gateway_inbound_rejected_total{")
        }
        assert rejected['leaf="responses",reason="schema"'] >= 1  # command_id 42
        assert rejected['leaf="responses",reason="not_json"'] >= 1  # not UTF-8


@pytest.mark.timeout(30)
async def test_expired_nack_retried_once_then_terminal(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """expired is retryable once with a fresh command, then terminal."""
    script = ["nack:expired", "nack:expired", "ack"]
    async with scripted(stack, topics, script) as car, make_gateway(max_attempts=5) as gw:
        created = await gw.activate(car.vin, "climate_plus")
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "FAILED"
        assert [a["result"] for a in final["attempts"]] == ["FAILED_RETRY", "FAILED_ESCALATE"]
        assert len(car.feature_commands()) == 2


@pytest.mark.timeout(30)
async def test_deactivate(make_gateway: GatewayFactory, make_sim: SimFactory) -> None:
    """activate then deactivate of the same feature: both SUCCEEDED, the feature is off."""
    async with make_sim(vehicles=1) as sim, make_gateway() as gw:
        spec = sim.specs[0]
        feature = spec.installed_features[0]
        first = await gw.activate(spec.vin, feature)
        assert (await gw.wait_terminal(first["activation_id"]))["state"] == "SUCCEEDED"
        second = await gw.activate(spec.vin, feature, action="deactivate")
        assert (await gw.wait_terminal(second["activation_id"]))["state"] == "SUCCEEDED"
        assert feature not in sim.runtime.vehicle(spec.vin).active_features
        assert not [e for e in await gw.events() if e["type"] == "feature.divergence"]


@pytest.mark.timeout(30)
async def test_divergent_feature_is_switched_off(
    make_gateway: GatewayFactory, make_sim: SimFactory
) -> None:
    """A vehicle reporting a feature active that nothing activated gets a deactivate."""
    async with make_sim(vehicles=1) as sim, make_gateway() as gw:
        spec = sim.specs[0]
        feature = spec.installed_features[-1]
        sim.runtime.patch(spec.vin, active_features=(feature,))
        event = await gw.wait_event(lambda e: e["type"] == "feature.divergence", 5)
        assert event["data"] == {**event["data"], "vin": spec.vin, "feature": feature}
        fixed = await gw.wait_terminal(event["data"]["activation_id"])
        assert fixed["state"] == "SUCCEEDED"
        assert feature not in sim.runtime.vehicle(spec.vin).active_features


@pytest.mark.timeout(30)
async def test_one_command_in_flight_per_vehicle(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """Two activations for one vehicle: the second command waits for the first answer."""
    async with (
        scripted(stack, topics, ["late:0.4", "ack"]) as car,
        make_gateway(ack_timeout_s=2.0) as gw,
    ):
        first = await gw.activate(car.vin, "climate_plus")
        second = await gw.activate(car.vin, "power_boost_50")
        a = await gw.wait_terminal(first["activation_id"])
        b = await gw.wait_terminal(second["activation_id"])
        assert a["state"] == b["state"] == "SUCCEEDED"
        sends = car.feature_commands()
        assert len(sends) == 2
        assert sends[1].at - sends[0].at >= 0.35, "second sent only after the first ack"


@pytest.mark.timeout(30)
async def test_first_step_lost_with_its_worker_is_taken_by_the_timer(
    make_gateway: GatewayFactory, make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accepting worker dies between CREATE and its first step: the timer, due
    FIRST_STEP_GRACE_S later, takes the step instead, and the activation SUCCEEDS once."""
    from gateway import engine

    async def lost(self: engine.Engine, snap: object) -> None:
        return None  # the worker "died" right after the create committed

    monkeypatch.setattr(engine, "FIRST_STEP_GRACE_S", 0.5)
    monkeypatch.setattr(engine.Engine, "_first_step", lost)
    async with make_sim(vehicles=1) as sim, make_gateway() as gw:
        spec = sim.specs[0]
        created = await gw.activate(spec.vin, spec.installed_features[0])
        await asyncio.sleep(0.3)
        pending = await gw.get(created["activation_id"])
        assert pending["state"] == "QUEUED", "nothing ran before the grace period"
        final = await gw.wait_terminal(created["activation_id"])
        assert final["state"] == "SUCCEEDED"
        assert sim.runtime.stats.received["activate"] == 1
