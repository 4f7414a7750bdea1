"""A hostile or broken car against a real gateway worker, mosquitto and Redis.

The car holds valid credentials for its own VIN (the vehicle listener, username = VIN)
and sends what it likes on its own topics. Nothing it sends may create work out of
proportion, wedge its twin, raise a traceback, grow memory, or fail someone else's
activation; every refusal is counted."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bench.junk import mutate
from launcher.stack import LocalStack
from protocol.codec import canonical_bytes
from protocol.credentials import vehicle_password
from protocol.errors import MqttConnectError
from protocol.models import MAX_SEQ
from protocol.mqtt import ConnectionOptions, MqttConnection
from protocol.timeutil import format_ts
from protocol.topics import Topics
from tests.conftest import SimFactory
from tests.gateway.conftest import GatewayFactory, Harness
from tests.gateway.vehicle import VIN, ScriptedVehicle
from tests.helpers import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60), pytest.mark.serial]
FEATURE = "climate_plus"


@asynccontextmanager
async def car(stack: LocalStack, topics: Topics, script: list[str] | None = None,
              **kw: Any) -> AsyncIterator[ScriptedVehicle]:  # fmt: skip
    """A scripted vehicle connected as itself: its own VIN and password, vehicle listener."""
    stack.allow_vehicles([VIN])
    address = stack.broker.vehicle_address(
        VIN, vehicle_password(stack.secrets["fleet_secret"], VIN)
    )
    async with ScriptedVehicle(address, topics, script or [], **kw) as vehicle:
        yield vehicle


def metrics_of(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric family in Prometheus text."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels = line[len(name) :].split(" ")[0].strip("{}")
            out[labels] = float(line.rsplit(" ", 1)[1])
    return out


async def rejected(gw: Harness) -> dict[str, float]:
    text = (await gw.client.get("/metrics")).text
    return metrics_of(text, "caas_gateway_inbound_rejected_total")


async def series(gw: Harness) -> int:
    text = (await gw.client.get("/metrics")).text
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def state_body(vehicle: ScriptedVehicle, **over: Any) -> dict[str, Any]:
    return {**vehicle.state(), **over}


async def open_activations(gw: Harness) -> int:
    total = 0
    for k in gw.shards():
        states: dict[str, str] = await gw.redis.hgetall(k.states)  # type: ignore[assignment]
        total += sum(int(v) for v in states.values())
    return total


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.timeout(90)
async def test_a_car_in_the_gateways_share_group_costs_no_answer(
    make_gateway: GatewayFactory, make_sim: SimFactory, stack: LocalStack, topics: Topics
) -> None:
    """Five car connections try to join the gateway's share group (its secret name, and
    guesses): refused; 100 activations then all succeed on their first answer (an
    answer lost to a car would show as an ack timeout), 0 FAILED."""
    group = stack.secrets["gateway_share_group"]
    filters = [topics.shared(leaf, g) for leaf in ("responses", "state", "presence")
               for g in (group, "gateway")]  # fmt: skip
    cars = []
    async with make_sim(vehicles=100) as sim, make_gateway(ack_timeout_s=5) as gw:
        stack.allow_vehicles([s.vin for s in sim.specs[:5]])
        for spec in sim.specs[:5]:
            own = vehicle_password(stack.secrets["fleet_secret"], spec.vin)
            conn = MqttConnection(
                stack.broker.vehicle_address(spec.vin, own),
                ConnectionOptions(client_id=spec.vin, auto_reconnect=False),
            )
            await conn.connect(5)
            with pytest.raises(MqttConnectError, match="refused"):
                await conn.subscribe([(f, 1) for f in filters])
            cars.append(conn)
        try:
            created = await asyncio.gather(
                *(gw.activate(s.vin, s.installed_features[0]) for s in sim.specs)
            )
            finals = [await gw.wait_terminal(c["activation_id"], 30) for c in created]
        finally:
            for conn in cars:
                await conn.disconnect()
        assert {f["state"] for f in finals} == {"SUCCEEDED"}
        codes = [a["response_code"] for f in finals for a in f["attempts"]]
        assert codes == ["ack"] * 100


async def test_a_state_naming_2000_features_creates_no_work(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """One state listing 2,000 installed and active features, or active features that
    are not installed, or names outside the contract: 0 deactivations, 0 divergence
    events, refusals counted, a bounded number of new metric series."""
    async with car(stack, topics) as vehicle, make_gateway() as gw:
        before = await series(gw)
        names = [f"bogus_{i}" for i in range(2000)]
        bad_states = [
            state_body(vehicle, installed_features=names, active_features=names, seq=50),
            state_body(vehicle, active_features=["climate_plus", *names[:10]], seq=51),
            state_body(
                vehicle,
                installed_features=["../../etc/passwd", "a\nb", "x" * 2000],
                active_features=["../../etc/passwd"],
                seq=52,
            ),
        ]
        await vehicle.publish_raw("state", *(json.dumps(s).encode() for s in bad_states))

        async def all_counted() -> bool:
            return (await rejected(gw)).get('leaf="state",reason="schema"', 0) >= 3

        await eventually(all_counted, 5)
        assert await open_activations(gw) == 0
        assert not [e for e in await gw.events() if e["type"] == "feature.divergence"]
        assert await series(gw) - before <= 3  # the rejected counter's series, and no more


async def test_unaccounted_features_are_switched_off_in_proportion(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """20 installed features reported active with nothing behind them: deactivations are
    opened for at most 16 per vehicle and window, the rest counted as limited; a second
    report of the same state opens nothing new (one per feature while open)."""
    names = [f"feature_{i:02d}" for i in range(20)]
    async with car(stack, topics, ["ignore"] * 40) as vehicle, make_gateway() as gw:
        body = state_body(vehicle, installed_features=names, active_features=names, seq=60)
        await vehicle.publish_raw("state", json.dumps(body).encode())
        await gw.wait_event(lambda e: e["type"] == "feature.divergence")
        await asyncio.sleep(0.3)
        body["seq"] = 61
        body["at"] = format_ts(time.time())
        await vehicle.publish_raw("state", json.dumps(body).encode())
        await asyncio.sleep(0.5)
        divergences = [e for e in await gw.events() if e["type"] == "feature.divergence"]
        assert len(divergences) == 16
        assert len({e["data"]["feature"] for e in divergences}) == 16
        text = (await gw.client.get("/metrics")).text
        assert metrics_of(text, "caas_gateway_divergences_limited_total")[""] >= 4


async def test_a_presence_from_2096_does_not_wedge_the_twin(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """A presence 'offline' dated 2096 counts as received now; the next real presence
    puts the vehicle back on line, and an activation goes through."""
    async with car(stack, topics) as vehicle, make_gateway() as gw:
        future = {"vin": VIN, "online": False, "at": "2096-01-01T00:00:00.000Z"}
        await vehicle.publish_raw("presence", canonical_bytes(future))

        async def online() -> bool:
            return bool((await gw.client.get(f"/v1/vehicles/{VIN}")).json()["online"])

        async def offline() -> bool:
            return not await online()

        await eventually(offline, 5)
        await asyncio.sleep(0.01)
        await vehicle.publish_presence(True)
        await eventually(online, 5)
        twin = (await gw.client.get(f"/v1/vehicles/{VIN}")).json()
        assert not twin["presence"]["at"].startswith("2096")
        created = await gw.activate(VIN, FEATURE)
        assert (await gw.wait_terminal(created["activation_id"]))["state"] == "SUCCEEDED"


async def test_a_huge_seq_does_not_freeze_the_state(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """seq 10^30 is refused; the largest valid seq is stored, yet the vehicle's next real
    state (lower seq, later change) replaces it: the twin follows the vehicle again."""
    async with car(stack, topics) as vehicle, make_gateway() as gw:
        await vehicle.publish_raw("state", json.dumps(state_body(vehicle, seq=10**30)).encode())
        await vehicle.publish_raw("state", json.dumps(state_body(vehicle, seq=MAX_SEQ)).encode())

        async def stored_seq() -> int:
            return int((await gw.client.get(f"/v1/vehicles/{VIN}")).json()["state"]["seq"])

        async def stored_max() -> bool:
            return await stored_seq() == MAX_SEQ

        async def stored_real() -> bool:
            return await stored_seq() == 7

        await eventually(stored_max, 5)
        assert (await rejected(gw)).get('leaf="state",reason="schema"', 0) >= 1
        await asyncio.sleep(0.01)
        vehicle.seq = 7
        vehicle.moving = True
        await vehicle.publish_state()
        await eventually(stored_real, 5)
        twin = (await gw.client.get(f"/v1/vehicles/{VIN}")).json()
        assert twin["state"]["moving"] is True


async def test_a_late_answer_with_an_older_state_is_not_reconciled(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """The twin holds seq 10 (feature off). An answer arriving now carries an older state
    (seq 5, feature on): it is not the newest, so nothing is switched off; the live query
    still gets the vehicle's answer as it was sent."""
    async with car(stack, topics) as vehicle, make_gateway() as gw:
        old = state_body(vehicle, active_features=[FEATURE], seq=5,
                         at=format_ts(time.time() - 60))  # fmt: skip
        vehicle.seq = 10
        await vehicle.publish_state()

        async def twin_at_seq_10() -> bool:
            twin = (await gw.client.get(f"/v1/vehicles/{VIN}")).json()
            return bool((twin.get("state") or {}).get("seq") == 10)

        # the scenario needs seq 10 stored first: an answer handled before it would be
        # the newest state known (seq 5 > 0), and reconciling on it would be right
        await eventually(twin_at_seq_10, 5)
        vehicle.stale_state = old
        answer = await gw.client.post(f"/v1/vehicles/{VIN}/status-query")
        assert answer.status_code == 200
        assert answer.json()["state"]["seq"] == 5
        await asyncio.sleep(0.5)
        assert not [e for e in await gw.events() if e["type"] == "feature.divergence"]
        twin = (await gw.client.get(f"/v1/vehicles/{VIN}")).json()
        assert twin["state"]["seq"] == 10


@pytest.mark.timeout(120)
async def test_ten_thousand_junk_payloads(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """10,000 mutated messages on the car's state, presence and responses topics: every
    refusal counted by reason, no traceback or error logged, the worker ready, the
    backlog drained, and a normal activation succeeds afterwards."""
    caplog.set_level(logging.INFO)
    async with car(stack, topics) as vehicle, make_gateway() as gw:
        rng = random.Random(7)
        seeds = {
            "state": canonical_bytes(vehicle.state()),
            "presence": canonical_bytes({"vin": VIN, "online": True, "at": format_ts(time.time())}),
            "responses": canonical_bytes({
                "v": 1, "command_id": "c-1", "vin": VIN, "type": "status", "status": "ack",
                "reason": None, "retry_after_s": None, "state": vehicle.state(),
                "diagnostics": None, "at": format_ts(time.time())}),
        }  # fmt: skip
        for leaf, seed in seeds.items():
            await vehicle.publish_raw(leaf, *(mutate(rng, seed) for _ in range(3334)))

        async def all_handled() -> bool:
            text = (await gw.client.get("/metrics")).text
            families = ("caas_gateway_inbound_rejected_total", "caas_gateway_twin_updates_total",
                        "caas_gateway_responses_total")  # fmt: skip
            handled = sum(sum(metrics_of(text, name).values()) for name in families)
            return handled >= 3 * 3334

        await eventually(all_handled, 60)
        assert sum((await rejected(gw)).values()) > 5000
        assert tracebacks(caplog) == []
        assert (await gw.client.get("/readyz")).status_code == 200
        await vehicle.publish_presence(True)
        vehicle.seq = 100
        await vehicle.publish_state()
        created = await gw.activate(VIN, FEATURE)
        assert (await gw.wait_terminal(created["activation_id"]))["state"] == "SUCCEEDED"


async def test_oversized_messages_are_refused_at_the_socket(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """200 messages of 200 kB never enter the backlog: refused as too_large on arrival."""
    async with car(stack, topics) as vehicle, make_gateway() as gw:
        big = b'{"pad": "' + b"x" * 200_000 + b'"}'
        await vehicle.publish_raw("state", *([big] * 200))

        async def all_refused() -> bool:
            return (await rejected(gw)).get('leaf="state",reason="too_large"', 0) >= 200

        await eventually(all_refused, 10)
        assert gw.gateway is not None
        assert gw.gateway.dispatcher.inbound.bytes < 1_000_000


async def test_live_queries_time_out_exactly_and_hold_no_connection(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """A silent vehicle: status-query answers 504 at status_query_timeout_s (not a Redis
    socket timeout later); 200 such queries at once leave every other route fast."""
    async with car(stack, topics, status_answers=0) as vehicle, make_gateway() as gw:
        assert vehicle.vin == VIN
        started = time.monotonic()
        answer = await gw.client.post(f"/v1/vehicles/{VIN}/status-query")
        elapsed = time.monotonic() - started
        assert answer.status_code == 504
        assert 1.0 <= elapsed < 1.8  # status_query_timeout_s = 1 (tests/gateway/conftest.py)
        silent = [
            asyncio.create_task(gw.client.post(f"/v1/vehicles/{VIN}/status-query"))
            for _ in range(200)
        ]
        await asyncio.sleep(0.2)
        started = time.monotonic()
        for _ in range(20):
            assert (await gw.client.get(f"/v1/vehicles/{VIN}")).status_code == 200
        assert time.monotonic() - started < 1.0
        assert {r.status_code for r in await asyncio.gather(*silent)} == {504}
