"""The broker config (mosquitto/): no anonymous access, per-vehicle identities, ACL isolation."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import paho.mqtt.client as paho
import pytest

from launcher.credentials import vehicle_password
from launcher.stack import LocalStack
from protocol.errors import MqttConnectError, MqttTimeout
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection
from protocol.topics import Topics
from tests.helpers import wait_until
from vehicle_sim.fleet import Mode, build_fleet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def two_vins(seed: int) -> tuple[str, str]:
    a, b = build_fleet(seed, 2, {Mode.ONLINE: 1.0})
    return a.vin, b.vin


async def connect_vehicle(
    stack: LocalStack,
    vin: str,
    received: list[paho.MQTTMessage] | None = None,
    client_id: str | None = None,
) -> MqttConnection:
    password = vehicle_password(stack.secrets["fleet_secret"], vin)
    conn = MqttConnection(
        stack.broker.vehicle_address(vin, password),
        ConnectionOptions(client_id=client_id or vin, auto_reconnect=False),
        on_message=received.append if received is not None else None,
    )
    await conn.connect(5)
    return conn


async def test_anonymous_client_is_refused(stack: LocalStack) -> None:
    """An anonymous connect on the vehicle listener is refused."""
    conn = MqttConnection(
        stack.broker.vehicle_address(),
        ConnectionOptions(client_id="anon", auto_reconnect=False),
    )
    with pytest.raises(MqttConnectError):
        await conn.connect(5)


async def test_wrong_password_is_refused(stack: LocalStack) -> None:
    """A VIN with somebody else's password is refused."""
    vin_a, vin_b = two_vins(101)
    stack.allow_vehicles([vin_a, vin_b])
    conn = MqttConnection(
        stack.broker.vehicle_address(vin_a, vehicle_password(stack.secrets["fleet_secret"], vin_b)),
        ConnectionOptions(client_id=vin_a, auto_reconnect=False),
    )
    with pytest.raises(MqttConnectError):
        await conn.connect(5)


async def test_vehicle_subscribed_to_wildcards_receives_only_its_own(stack: LocalStack) -> None:
    """A subscribed to B's commands, to every vehicle's commands and responses receives
    nothing of B's (mosquitto 2.0 grants the SUBACK but the ACL filters delivery)."""
    vin_a, vin_b = two_vins(102)
    stack.allow_vehicles([vin_a, vin_b])
    root = Topics("caas/v1")
    received: list[paho.MQTTMessage] = []
    vehicle = await connect_vehicle(stack, vin_a, received)
    filters = [root.commands(vin_b), root.all_of("commands"), root.all_of("responses"), "#"]
    await vehicle.subscribe([(f, 1) for f in filters])
    gateway = MqttConnection(
        stack.broker.gateway_address(), ConnectionOptions(client_id=f"gw-{uuid.uuid4().hex[:6]}")
    )
    await gateway.connect(5)
    try:
        await gateway.publish_and_wait(root.commands(vin_b), b"for-b")
        await gateway.publish_and_wait(root.commands(vin_a), b"for-a")
        await wait_until(lambda: received)
        await asyncio.sleep(0.2)
        assert {m.payload for m in received} == {b"for-a"}
    finally:
        await vehicle.disconnect()
        await gateway.disconnect()


async def test_vehicle_cannot_publish_as_another_vehicle(stack: LocalStack, topics: Topics) -> None:
    """A's publishes on B's state/responses/presence never reach a subscriber; its own do."""
    vin_a, vin_b = two_vins(103)
    stack.allow_vehicles([vin_a, vin_b])
    seen: list[paho.MQTTMessage] = []
    gateway = MqttConnection(
        stack.broker.gateway_address(),
        ConnectionOptions(
            client_id=f"gw-{uuid.uuid4().hex[:6]}",
            subscriptions=[(f"{topics.root}/vehicles/+/+", 1)],
        ),
        on_message=seen.append,
    )
    await gateway.connect(5)
    vehicle = await connect_vehicle(stack, vin_a)
    try:
        for leaf in (topics.state, topics.responses, topics.presence):
            vehicle.publish(leaf(vin_b), b'{"spoof":true}')
        await vehicle.publish_and_wait(topics.state(vin_a), b'{"own":true}')
        await asyncio.sleep(0.3)
        got = {m.topic for m in seen}
        assert got == {topics.state(vin_a)}
    finally:
        await vehicle.disconnect()
        await gateway.disconnect()


async def test_client_id_is_forced_to_the_vin(stack: LocalStack, topics: Topics) -> None:
    """On the vehicle listener a vehicle's client id is its VIN whatever it asks for:
    a second connection of the same VIN takes over the first."""
    vin_a, _ = two_vins(104)
    stack.allow_vehicles([vin_a])
    first = await connect_vehicle(stack, vin_a, client_id="anything-1")
    second = await connect_vehicle(stack, vin_a, client_id="anything-2")
    try:
        await wait_until(lambda: not first.connected.is_set())
        assert second.connected.is_set()
    finally:
        await second.disconnect()
        await first.disconnect()


async def test_gateway_identity_cannot_publish_vehicle_state(stack: LocalStack) -> None:
    """The gateway may write commands only: its write to a state topic is dropped."""
    root = Topics("caas/v1")
    vin_a, _ = two_vins(106)
    seen: list[paho.MQTTMessage] = []
    watcher = MqttConnection(
        stack.broker.gateway_address(),
        ConnectionOptions(
            client_id=f"w-{uuid.uuid4().hex[:6]}", subscriptions=[(root.state(vin_a), 1)]
        ),
        on_message=seen.append,
    )
    await watcher.connect(5)
    gateway = MqttConnection(
        stack.broker.gateway_address(), ConnectionOptions(client_id=f"gw-{uuid.uuid4().hex[:6]}")
    )
    await gateway.connect(5)
    try:
        # mosquitto may or may not PUBACK a denied publish; either way it must not deliver it
        with contextlib.suppress(MqttTimeout):
            await gateway.publish_and_wait(root.state(vin_a), b"{}", timeout_s=0.5)
        await gateway.publish_and_wait(root.commands(vin_a), b"allowed")
        await asyncio.sleep(0.3)
        assert seen == []
    finally:
        await gateway.disconnect()
        await watcher.disconnect()


def test_broker_address_parses_spec_url() -> None:
    """CAAS_MQTT_URL form mqtt://user:pass@host:port round-trips."""
    addr = BrokerAddress.from_url("mqtt://gw:p%40ss@127.0.0.1:1884")
    assert (addr.username, addr.password, addr.port) == ("gw", "p@ss", 1884)
    with pytest.raises(ValueError, match="mqtt://"):
        BrokerAddress.from_url("http://x")
