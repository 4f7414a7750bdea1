"""The simulator over a real broker: every mode, every docs/spec.md §2.2 rule, state and
presence."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bench.probe import FleetProbe
from launcher.stack import LocalStack
from protocol.codec import canonical_bytes
from protocol.models import CommandType, Response
from protocol.topics import Topics
from tests.conftest import SimFactory
from tests.helpers import Watcher, wait_until
from vehicle_sim.behaviour import Behaviour
from vehicle_sim.fleet import Mode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
EVERY_MODE = {mode: 1.0 for mode in Mode}


@pytest.fixture
async def watcher(stack: LocalStack, topics: Topics) -> AsyncIterator[Watcher]:
    w = Watcher(stack, topics)
    await w.conn.connect(5)
    yield w
    await w.conn.disconnect()


def vin_of(sim: Any, mode: Mode) -> str:
    return next(s.vin for s in sim.specs if s.initial_mode is mode)


async def test_every_mode_answers_activate_as_specified(
    make_sim: SimFactory, probe: FleetProbe
) -> None:
    """online acks; busy/driving/nack/conflict nack with their reason; timeout, offline silent."""
    async with make_sim(vehicles=8, mix=EVERY_MODE) as sim:
        expected = {
            Mode.ONLINE: ("ack", None),
            Mode.BUSY: ("nack", "busy"),
            Mode.NACK: ("nack", "internal_error"),
            Mode.DRIVING: ("nack", "driving"),
            Mode.CONFLICT: ("nack", "conflict"),
        }
        for mode, (status, reason) in expected.items():
            vin = vin_of(sim, mode)
            body = await probe.ask(
                vin, CommandType.ACTIVATE, feature="climate_plus", activation_id="a1"
            )
            Response.model_validate(body)
            assert (body["status"], body["reason"]) == (status, reason), mode
        busy = await probe.ask(
            vin_of(sim, Mode.BUSY), CommandType.ACTIVATE, feature="climate_plus", activation_id="a2"
        )
        assert busy["retry_after_s"] >= 1
        for mode in (Mode.TIMEOUT, Mode.OFFLINE):
            cmd = probe.command(vin_of(sim, mode), CommandType.STATUS)
            probe.send(cmd)
            assert await probe.expect_silence(cmd.command_id, 0.5), mode


async def test_response_uses_request_response_properties(
    make_sim: SimFactory, probe: FleetProbe, topics: Topics
) -> None:
    """The answer comes on the vehicle's responses topic with Correlation Data = command_id."""
    async with make_sim(vehicles=1) as sim:
        vin = sim.specs[0].vin
        cmd = probe.command(vin, CommandType.STATUS)
        answer = await probe.send(cmd)
        assert answer.topic == topics.responses(vin)
        assert answer.correlation == cmd.command_id.encode()
        assert answer.body["state"]["vin"] == vin


async def test_validation_rules_over_the_wire(make_sim: SimFactory, probe: FleetProbe) -> None:
    """malformed (id from Correlation Data), wrong_vehicle, bad_signature, expired."""
    async with make_sim(vehicles=2) as sim:
        vin, other = sim.specs[0].vin, sim.specs[1].vin
        garbage = probe.command(vin, CommandType.STATUS)
        answer = await probe.send(garbage, payload=b"\x00not json")
        assert (answer.body["reason"], answer.body["command_id"]) == (
            "malformed",
            garbage.command_id,
        )
        misdirected = probe.command(other, CommandType.STATUS)
        probe.conn.publish(probe.topics.commands(vin), misdirected.payload)
        probe.send(misdirected, payload=None)  # also the real one, to register the waiter
        wrong = [a.body for a in (await _answers(probe, misdirected.command_id, 2))]
        assert {a["reason"] for a in wrong} == {"wrong_vehicle", None}
        tampered = probe.command(vin, CommandType.STATUS)
        body = {**tampered.body, "attempt": 9}
        bad = await probe.send(tampered, payload=canonical_bytes(body))
        assert bad.body["reason"] == "bad_signature"
        old = probe.command(vin, CommandType.STATUS)
        stale = probe.command(vin, CommandType.STATUS, command_id=old.command_id)
        stale_body = probe.signer.sign({**stale.body, "expires_at": "2020-01-01T00:00:00.000Z"})
        expired = await probe.send(stale, payload=canonical_bytes(stale_body))
        assert expired.body["reason"] == "expired"


async def _answers(probe: FleetProbe, command_id: str, count: int) -> list[Any]:
    await wait_until(lambda: len(probe.answers.get(command_id, [])) >= count)
    return probe.answers[command_id]


async def test_duplicate_command_gets_identical_answer_and_acts_once(
    make_sim: SimFactory, probe: FleetProbe, watcher: Watcher, topics: Topics
) -> None:
    """QoS 1 redelivery: the same command twice → two identical answers, one state change."""
    async with make_sim(vehicles=1) as sim:
        vin = sim.specs[0].vin
        await wait_until(lambda: topics.state(vin) in watcher.last)
        states_before = watcher.count[topics.state(vin)]
        cmd = probe.command(vin, CommandType.ACTIVATE, feature="climate_plus", activation_id="dup")
        probe.send(cmd)
        probe.send(cmd)
        first, second = await _answers(probe, cmd.command_id, 2)
        assert first.body == second.body
        await wait_until(lambda: watcher.count[topics.state(vin)] == states_before + 1)
        assert watcher.last[topics.state(vin)]["active_features"] == ["climate_plus"]
        assert sim.runtime.stats.duplicates == 1


async def test_retained_presence_and_state_on_connect(
    make_sim: SimFactory, stack: LocalStack, topics: Topics
) -> None:
    """A subscriber arriving later gets retained presence (online or not) and state."""
    async with make_sim(vehicles=4, mix={Mode.ONLINE: 0.5, Mode.OFFLINE: 0.5}) as sim:
        late = Watcher(stack, topics)
        await late.conn.connect(5)
        try:
            await wait_until(lambda: len(late.last) == 8)
            for spec in sim.specs:
                online = spec.initial_mode is Mode.ONLINE
                assert late.last[topics.presence(spec.vin)]["online"] is online
                assert late.last[topics.state(spec.vin)]["vin"] == spec.vin
        finally:
            await late.conn.disconnect()


async def test_driving_vehicle_parks_and_publishes_state(
    make_sim: SimFactory, probe: FleetProbe, watcher: Watcher, topics: Topics
) -> None:
    """Trip model: moving → nack/driving; at trip end it parks (state published) and acts."""
    behaviour = Behaviour(trip_s=(0.5, 0.5))
    async with make_sim(vehicles=1, mix={Mode.DRIVING: 1.0}, behaviour=behaviour) as sim:
        vin = sim.specs[0].vin
        first = await probe.ask(
            vin, CommandType.ACTIVATE, feature="climate_plus", activation_id="t"
        )
        assert first["reason"] == "driving"
        assert first["state"]["moving"] is True
        await wait_until(lambda: watcher.last.get(topics.state(vin), {}).get("moving") is False)
        parked = await probe.ask(
            vin, CommandType.ACTIVATE, feature="climate_plus", activation_id="t"
        )
        assert parked["status"] == "ack"
        assert parked["state"]["gear"] == "P"


async def test_flaky_vehicle_outcomes_repeat_across_runs(
    stack: LocalStack, signer: Any, make_sim: SimFactory, topics: Topics
) -> None:
    """Determinism: same seed and command_ids → the same answered/silent/duplicated pattern."""

    async def run_once() -> list[int]:
        async with (
            make_sim(
                vehicles=3,
                mix={Mode.FLAKY: 1.0},
                seed=5,
                behaviour=Behaviour(flaky_delay_s=(0.05, 0.1), flaky_reconnect_s=(0.1, 0.2)),
            ) as sim,
            FleetProbe(
                stack.broker.gateway_address(),
                signer,
                topics,
                client_id=f"p-{uuid.uuid4().hex[:6]}",
            ) as p,
        ):
            vins = [s.vin for s in sim.specs]
            for i in range(30):
                vin = vins[i % 3]
                cmd = p.command(vin, CommandType.STATUS, command_id=f"det-{i}")
                p.send(cmd)
                await p.expect_silence(cmd.command_id, 0.15)
            await p.expect_silence("none", 0.3)
            return [len(p.answers.get(f"det-{i}", [])) for i in range(30)]

    first = await run_once()
    second = await run_once()
    assert first == second
    assert {0, 1, 2} <= set(first)  # dropped, answered and duplicated all happened


async def test_per_vehicle_mode_answers_and_fires_will_on_drop(
    make_sim: SimFactory, probe: FleetProbe, watcher: Watcher, topics: Topics
) -> None:
    """Per-vehicle connections: each VIN answers; an abrupt drop makes the broker send the Will."""
    async with make_sim(vehicles=3, connection_mode="per-vehicle") as sim:
        assert sim.link.connected_count() == 3
        for spec in sim.specs:
            body = await probe.ask(spec.vin, CommandType.STATUS)
            assert body["status"] == "ack"
        victim = sim.specs[0].vin
        await wait_until(lambda: watcher.last.get(topics.presence(victim), {}).get("online"))
        sim.runtime.set_mode(victim, Mode.OFFLINE, abrupt=True)
        await wait_until(
            lambda: watcher.last[topics.presence(victim)]["online"] is False, timeout_s=10
        )
        cmd = probe.command(victim, CommandType.STATUS)
        probe.send(cmd)
        assert await probe.expect_silence(cmd.command_id, 0.5)
        sim.runtime.set_mode(victim, Mode.ONLINE)
        # back on line with its persistent session: the queued command is delivered
        answer = await probe.send(cmd)
        assert answer.body["status"] == "ack"
        # the presence and the answer travel on different topics: either may come first
        await wait_until(lambda: watcher.last[topics.presence(victim)]["online"] is True)


async def test_retained_command_is_never_acted_on(
    make_sim: SimFactory, probe: FleetProbe, topics: Topics
) -> None:
    """A command left retained on the broker is dropped when replayed on subscribe."""
    from vehicle_sim.fleet import build_fleet

    vin = build_fleet(1, 1, {Mode.ONLINE: 1.0})[0].vin  # the fleet make_sim will build
    stale = probe.command(vin, CommandType.ACTIVATE, feature="climate_plus", activation_id="r")
    await probe.conn.publish_and_wait(topics.commands(vin), stale.payload, retain=True)
    try:
        async with make_sim(vehicles=1, seed=1) as sim:
            assert sim.specs[0].vin == vin
            await wait_until(lambda: sim.runtime.stats.dropped["retained_command"] == 1)
            assert sim.runtime.vehicles[vin].active_features == ()
            assert not probe.answers.get(stale.command_id)
    finally:
        await probe.conn.publish_and_wait(topics.commands(vin), b"", retain=True)  # clear it
