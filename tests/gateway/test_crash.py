"""Crash safety: broker restart, Redis restart (AOF) and SIGKILL of a worker while
activations are in flight. Nothing may be lost, doubled, or left unfinished."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest

from gateway.activation import Activation
from gateway.events import Send
from launcher.stack import LocalStack
from protocol.errors import MqttPublishRefused
from protocol.models import CommandType
from tests.conftest import SimFactory
from tests.gateway.conftest import GatewayFactory, Harness
from vehicle_sim.behaviour import Behaviour
from vehicle_sim.fleet import Mode

pytestmark = pytest.mark.integration
TERMINAL = {"activation.succeeded", "activation.failed", "activation.cancelled"}
# a third answers at once, the rest are driving and park 3-6 s after the simulator
# starts, across the restart (a worker takes 1-2.5 s to start, and on a cluster each
# accept waits for a replica)
MIX = {Mode.ONLINE: 1 / 3, Mode.DRIVING: 2 / 3}
TRIPS = Behaviour(trip_s=(3.0, 6.0))


async def ended(gw: Harness) -> list[dict[str, Any]]:
    return [e for e in await gw.events() if e["type"] in TERMINAL]


async def submit_all(gw: Harness, vins: list[str], feature_of: dict[str, str]) -> list[str]:
    created = await asyncio.gather(*(gw.activate(vin, feature_of[vin]) for vin in vins))
    return [c["activation_id"] for c in created]


async def wait_all_terminal(gw: Harness, ids: list[str], timeout_s: float) -> None:
    pending = set(ids)

    def done(event: dict[str, Any]) -> bool:
        if event["type"] in TERMINAL:
            pending.discard(event["data"]["activation_id"])
        return not pending

    await gw.wait_event(done, timeout_s)


def assert_events_exactly_once(events: list[dict[str, Any]], ids: list[str]) -> None:
    assert len({e["event_id"] for e in events}) == len(events), "event ids are unique"
    accepted = Counter(e["data"]["activation_id"] for e in events
                       if e["type"] == "activation.accepted")  # fmt: skip
    ended = Counter(e["data"]["activation_id"] for e in events if e["type"] in TERMINAL)
    for activation_id in ids:
        assert accepted[activation_id] == 1, activation_id
        assert ended[activation_id] == 1, activation_id


@pytest.mark.timeout(60)
async def test_broker_restart_mid_flight(
    make_gateway: GatewayFactory, make_sim: SimFactory, stack: LocalStack
) -> None:
    """Mosquitto restarts while 30 activations are in flight: all still SUCCEED, once."""
    retry = {"max_attempts": 6, "ack_timeout_s": 1.0, "status_query_timeout_s": 1.0,
             "ready_wait_s": 5.0, "initial_backoff_s": 0.2}  # fmt: skip
    async with make_sim(vehicles=30, mix=MIX, behaviour=TRIPS) as sim, make_gateway(**retry) as gw:
        features = {s.vin: s.installed_features[0] for s in sim.specs}
        ids = await submit_all(gw, list(features), features)
        assert len(await ended(gw)) < len(ids), "the restart must come mid-flight"
        await asyncio.to_thread(stack.broker.restart)
        await wait_all_terminal(gw, ids, 45)
        finals = [await gw.get(i) for i in ids]
        assert Counter(f["state"] for f in finals) == {"SUCCEEDED": 30}
        assert_events_exactly_once(await gw.events(), ids)
        for spec in sim.specs:
            assert features[spec.vin] in sim.runtime.vehicle(spec.vin).active_features
        assert gw.gateway is not None
        assert gw.gateway.dispatcher.conn.reconnects >= 1


@pytest.mark.timeout(60)
@pytest.mark.standalone_only
async def test_redis_restart_mid_flight(
    make_gateway: GatewayFactory, make_sim: SimFactory, stack: LocalStack
) -> None:
    """Redis SIGKILLed and restarted from its AOF mid-flight: all SUCCEED, events once."""
    assert stack.redis is not None
    retry = {"max_attempts": 6, "ack_timeout_s": 1.0, "status_query_timeout_s": 1.0,
             "ready_wait_s": 5.0, "initial_backoff_s": 0.2}  # fmt: skip
    async with make_sim(vehicles=30, mix=MIX, behaviour=TRIPS) as sim, make_gateway(**retry) as gw:
        features = {s.vin: s.installed_features[0] for s in sim.specs}
        ids = await submit_all(gw, list(features), features)
        assert len(await ended(gw)) < len(ids), "the restart must come mid-flight"
        await asyncio.to_thread(stack.redis.restart, True)
        await wait_all_terminal(gw, ids, 45)
        finals = [await gw.get(i) for i in ids]
        assert Counter(f["state"] for f in finals) == {"SUCCEEDED": 30}
        assert_events_exactly_once(await gw.events(), ids)


def tracebacks_and_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.exc_info or r.levelno >= logging.ERROR]  # fmt: skip


@pytest.mark.timeout(60)
async def test_broker_sigkill_mid_flight_logs_no_traceback(
    make_gateway: GatewayFactory,
    make_sim: SimFactory,
    stack: LocalStack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Mosquitto SIGKILLed with 120 activations in flight and 60 more submitted while it
    is down, then restarted: all 180 SUCCEED, once, and nothing logs a traceback."""
    caplog.set_level(logging.WARNING)
    retry = {"max_attempts": 8, "ack_timeout_s": 1.0, "status_query_timeout_s": 1.0,
             "ready_wait_s": 8.0, "initial_backoff_s": 0.2}  # fmt: skip
    async with make_sim(vehicles=180, mix=MIX, behaviour=TRIPS) as sim, make_gateway(**retry) as gw:
        assert gw.gateway is not None
        features = {s.vin: s.installed_features[0] for s in sim.specs}
        vins = list(features)
        ids = await submit_all(gw, vins[:120], features)
        await asyncio.to_thread(stack.broker.kill)
        assert len(await ended(gw)) < len(ids), "the kill must come mid-flight"
        ids += await submit_all(gw, vins[120:], features)  # their first sends meet no broker
        await asyncio.sleep(1.5)  # ack timeouts fire, status queries go out: all queued
        await asyncio.to_thread(stack.broker.start)
        await wait_all_terminal(gw, ids, 40)
        finals = [await gw.get(i) for i in ids]
        assert Counter(f["state"] for f in finals) == {"SUCCEEDED": 180}
        assert_events_exactly_once(await gw.events(), ids)
        assert gw.gateway.dispatcher.conn.reconnects >= 1
        assert gw.gateway.dispatcher.send_failures == gw.gateway.engine.send_failures == 0
    assert tracebacks_and_errors(caplog) == []


@pytest.mark.timeout(30)
async def test_a_failed_send_is_one_log_line_and_the_activation_recovers(
    make_gateway: GatewayFactory,
    make_sim: SimFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A publish the client refuses (first activate) and a send that raises (first status
    query): each is one warning line, counted, no traceback; the ack timeout and the
    status query recover the lost command and the activation SUCCEEDS."""
    caplog.set_level(logging.WARNING)
    async with make_sim(vehicles=1) as sim, make_gateway() as gw:
        assert gw.gateway is not None
        dispatcher = gw.gateway.dispatcher
        publish, send_command = dispatcher.conn.publish, dispatcher.send_command
        failed: list[str] = []

        def refuse_first_activate(topic: str, payload: bytes, *args: Any) -> int:
            if b'"activate"' in payload and "activate" not in failed:
                failed.append("activate")
                raise MqttPublishRefused(dispatcher.conn.client_id, topic, "client queue full")
            return publish(topic, payload, *args)

        async def raise_on_first_status(act: Activation, send: Send) -> None:
            if send.type is CommandType.STATUS and "status" not in failed:
                failed.append("status")
                raise RuntimeError("signer unavailable")
            await send_command(act, send)

        monkeypatch.setattr(dispatcher.conn, "publish", refuse_first_activate)
        monkeypatch.setattr(dispatcher, "send_command", raise_on_first_status)
        spec = sim.specs[0]
        created = await gw.activate(spec.vin, spec.installed_features[0])
        final = await gw.wait_terminal(created["activation_id"], 20)
        assert final["state"] == "SUCCEEDED"
        assert sorted(failed) == ["activate", "status"]  # the order: how stale the twin is
        assert dispatcher.send_failures == 1 and gw.gateway.engine.send_failures == 1
    lines = [r for r in caplog.records if r.getMessage().startswith("command.send_failed")]
    assert len(lines) == 2
    assert tracebacks_and_errors(caplog) == []
