"""The broker config (mosquitto/): no anonymous access, per-vehicle identities, ACL
isolation, separated listeners, and what the caas_auth plugin refuses (shared
subscriptions to anyone but the gateway, client ids not namespaced by the username)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import shutil
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from launcher.__main__ import CONTAINER_PLUGIN_PATH
from launcher.__main__ import main as launcher_main
from launcher.compose import read_env_file
from launcher.errors import PluginBuildFailed
from launcher.plugin import PLUGIN_SOURCE, build_plugin
from launcher.stack import LocalStack
from protocol.credentials import vehicle_password
from protocol.errors import MqttConnectError, MqttTimeout
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection
from protocol.topics import Topics
from tests.helpers import wait_until
from vehicle_sim.fleet import Mode, build_fleet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
NOT_AUTHORIZED = 0x87
INBOUND = ("responses", "state", "presence")


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


class RawClient:
    """A bare paho client on its own network thread, outside the project's driver (no
    client id namespacing): what somebody holding the credentials can send."""

    def __init__(self, address: BrokerAddress, client_id: str) -> None:
        self.address = address
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        self.client.username_pw_set(address.username, address.password)
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.acks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.client.on_connect = lambda c, u, f, reason, p: self.connacks.put(reason)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.acks.put(list(codes))
        self.client.on_unsubscribe = lambda c, u, mid, codes, p: self.acks.put(list(codes))

    def _connect(self) -> ReasonCode:
        self.client.connect(self.address.host, self.address.port, keepalive=10)
        self.client.loop_start()
        return self.connacks.get(timeout=5)

    def _subscribe(self, filters: list[str]) -> list[ReasonCode]:
        self.client.subscribe([(f, 1) for f in filters])
        return self.acks.get(timeout=5)

    def _unsubscribe(self, filters: list[str]) -> list[ReasonCode]:
        self.client.unsubscribe(filters)
        return self.acks.get(timeout=5)

    async def connect(self) -> ReasonCode:
        return await asyncio.to_thread(self._connect)

    async def subscribe(self, filters: list[str]) -> list[ReasonCode]:
        return await asyncio.to_thread(self._subscribe, filters)

    async def unsubscribe(self, filters: list[str]) -> list[ReasonCode]:
        return await asyncio.to_thread(self._unsubscribe, filters)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def car_address(stack: LocalStack, vin: str, port: int | None = None) -> BrokerAddress:
    password = vehicle_password(stack.secrets["fleet_secret"], vin)
    return BrokerAddress("127.0.0.1", port or stack.broker.settings.vehicle_port, vin, password)


def share_filters(topics: Topics, group: str) -> list[str]:
    """The gateway's own shared filters, and other groups and filters a car might try."""
    return [
        *(topics.shared(leaf, group) for leaf in INBOUND),
        f"$share/{group}/#",
        f"$share/gateway/{topics.all_of('responses')}",
        f"$share/anything/{topics.root}/vehicles/+/+",
    ]


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


# ---------------------------------------------------------------- shared subscriptions


async def test_car_gets_not_authorized_for_every_shared_subscription(
    stack: LocalStack, topics: Topics
) -> None:
    """A car's SUBSCRIBE and UNSUBSCRIBE of any $share/... filter (the gateway's group
    included) get reason 0x87 Not authorized; its own plain subscription is granted."""
    vin_a, _ = two_vins(110)
    stack.allow_vehicles([vin_a])
    car = RawClient(car_address(stack, vin_a), vin_a)
    assert not (await car.connect()).is_failure
    try:
        filters = share_filters(topics, stack.secrets["gateway_share_group"])
        codes = await car.subscribe(filters)
        assert [c.value for c in codes] == [NOT_AUTHORIZED] * len(filters), codes
        assert all(c.is_failure for c in codes)
        codes = await car.unsubscribe(filters)
        assert [c.value for c in codes] == [NOT_AUTHORIZED] * len(filters), codes
        assert not (await car.subscribe([topics.commands(vin_a)]))[0].is_failure
    finally:
        car.close()


async def test_car_in_the_gateway_group_steals_no_answers(
    stack: LocalStack, topics: Topics
) -> None:
    """With a car connected that tried to join the gateway's share group, all 50 answers
    the fleet publishes for 50 VINs reach the gateway's shared subscription (0 lost)."""
    group = stack.secrets["gateway_share_group"]
    vin_a, _ = two_vins(111)
    stack.allow_vehicles([vin_a])
    car = RawClient(car_address(stack, vin_a), vin_a)
    assert not (await car.connect()).is_failure
    received: list[paho.MQTTMessage] = []
    gateway = MqttConnection(
        stack.broker.gateway_address(),
        ConnectionOptions(
            client_id=f"gw-{uuid.uuid4().hex[:6]}",
            subscriptions=[(topics.shared(leaf, group), 1) for leaf in INBOUND],
        ),
        on_message=received.append,
    )
    fleet = MqttConnection(
        stack.broker.fleet_address(), ConnectionOptions(client_id=f"f-{uuid.uuid4().hex[:6]}")
    )
    try:
        await car.subscribe([topics.shared(leaf, group) for leaf in INBOUND])
        await gateway.connect(5)
        await fleet.connect(5)
        vins = [spec.vin for spec in build_fleet(112, 50, {Mode.ONLINE: 1.0})]
        for vin in vins:
            fleet.publish(topics.responses(vin), vin.encode())
        await fleet.flush(10)
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: len(received) >= len(vins), timeout_s=5)
        await asyncio.sleep(0.2)
        lost = len(vins) - len(received)
        assert lost == 0, f"{lost} of {len(vins)} answers never reached the gateway"
        assert sorted(bytes(m.payload).decode() for m in received) == sorted(vins)
    finally:
        car.close()
        await fleet.disconnect()
        await gateway.disconnect()


async def test_only_the_gateway_identity_may_use_shared_subscriptions(
    stack: LocalStack, topics: Topics
) -> None:
    """On the service listener the fleet identity gets 0x87 for $share/... filters; the
    gateway identity is granted its group."""
    group = stack.secrets["gateway_share_group"]
    fleet = RawClient(stack.broker.fleet_address(), f"fleet-{uuid.uuid4().hex[:6]}")
    assert not (await fleet.connect()).is_failure
    gateway = MqttConnection(
        stack.broker.gateway_address(), ConnectionOptions(client_id=f"gw-{uuid.uuid4().hex[:6]}")
    )
    await gateway.connect(5)
    try:
        filters = share_filters(topics, group)
        codes = await fleet.subscribe(filters)
        assert [c.value for c in codes] == [NOT_AUTHORIZED] * len(filters), codes
        await gateway.subscribe([(topics.shared(leaf, group), 1) for leaf in INBOUND])
    finally:
        fleet.close()
        await gateway.disconnect()


# ---------------------------------------------------------------- listeners and client ids


async def test_service_identities_are_refused_on_the_vehicle_listener(stack: LocalStack) -> None:
    """The gateway and fleet credentials do not exist on the vehicle listener."""
    port = stack.broker.settings.vehicle_port
    for service in (stack.broker.gateway_address(), stack.broker.fleet_address()):
        address = BrokerAddress("127.0.0.1", port, service.username, service.password)
        conn = MqttConnection(
            address, ConnectionOptions(client_id=f"x-{uuid.uuid4().hex[:6]}", auto_reconnect=False)
        )
        with pytest.raises(MqttConnectError, match="Not authorized"):
            await conn.connect(5)


async def test_car_is_refused_on_the_service_listener(stack: LocalStack) -> None:
    """A car's credentials do not exist on the service listener."""
    vin_a, _ = two_vins(113)
    stack.allow_vehicles([vin_a])
    conn = MqttConnection(
        car_address(stack, vin_a, stack.broker.settings.service_port),
        ConnectionOptions(client_id=vin_a, auto_reconnect=False),
    )
    with pytest.raises(MqttConnectError, match="Not authorized"):
        await conn.connect(5)


async def test_service_client_ids_must_carry_the_username(stack: LocalStack) -> None:
    """On the service listener a client id other than <username> or <username>-<suffix>
    is refused, whatever the password: fleet as gateway-x, gateway as fleet-x, ..."""
    gateway, fleet = stack.broker.gateway_address(), stack.broker.fleet_address()
    refused = [
        (fleet, "gateway-x"),
        (fleet, "gateway"),
        (fleet, "fleetx"),
        (fleet, "fleet-"),
        (gateway, "fleet-sim-0"),
        (gateway, "x-gateway"),
    ]
    for address, client_id in refused:
        raw = RawClient(address, client_id)
        reason = await raw.connect()
        raw.close()
        assert reason.value == NOT_AUTHORIZED, (address.username, client_id, reason)
    for address, client_id in [(fleet, "fleet"), (gateway, f"gateway-{uuid.uuid4().hex[:6]}")]:
        raw = RawClient(address, client_id)
        assert not (await raw.connect()).is_failure, client_id
        raw.close()


async def test_fleet_cannot_kick_a_gateway_connection(stack: LocalStack, topics: Topics) -> None:
    """The fleet identity connecting with a connected gateway worker's client id is
    refused, and the worker stays connected and keeps receiving."""
    received: list[paho.MQTTMessage] = []
    gateway = MqttConnection(
        stack.broker.gateway_address(),
        ConnectionOptions(
            client_id=f"gw-{uuid.uuid4().hex[:6]}",
            auto_reconnect=False,
            subscriptions=[(topics.all_of("responses"), 1)],
        ),
        on_message=received.append,
    )
    await gateway.connect(5)
    fleet = MqttConnection(
        stack.broker.fleet_address(), ConnectionOptions(client_id=f"f-{uuid.uuid4().hex[:6]}")
    )
    await fleet.connect(5)
    try:
        assert gateway.client_id.startswith("gateway-")
        intruder = RawClient(stack.broker.fleet_address(), gateway.client_id)
        reason = await intruder.connect()
        intruder.close()
        assert reason.value == NOT_AUTHORIZED
        await asyncio.sleep(0.3)
        assert gateway.connected.is_set()
        await fleet.publish_and_wait(topics.responses("V" * 17), b"still-here")
        await wait_until(lambda: [bytes(m.payload) for m in received] == [b"still-here"])
    finally:
        await fleet.disconnect()
        await gateway.disconnect()


async def test_car_cannot_take_over_another_cars_session(stack: LocalStack, topics: Topics) -> None:
    """Car B asking for car A's VIN as client id connects as itself on the vehicle
    listener (client id forced to the username) and is refused on the service listener:
    A stays connected and still gets its commands."""
    vin_a, vin_b = two_vins(114)
    stack.allow_vehicles([vin_a, vin_b])
    received: list[paho.MQTTMessage] = []
    car_a = await connect_vehicle(stack, vin_a, received)
    await car_a.subscribe([(topics.commands(vin_a), 1)])
    intruder = RawClient(car_address(stack, vin_b), vin_a)
    via_service = RawClient(car_address(stack, vin_b, stack.broker.settings.service_port), vin_a)
    gateway = MqttConnection(
        stack.broker.gateway_address(), ConnectionOptions(client_id=f"gw-{uuid.uuid4().hex[:6]}")
    )
    await gateway.connect(5)
    try:
        assert not (await intruder.connect()).is_failure
        assert (await via_service.connect()).value == NOT_AUTHORIZED
        await asyncio.sleep(0.3)
        assert car_a.connected.is_set()
        await gateway.publish_and_wait(topics.commands(vin_a), b"for-a")
        await wait_until(lambda: [bytes(m.payload) for m in received] == [b"for-a"])
    finally:
        intruder.close()
        via_service.close()
        await gateway.disconnect()
        await car_a.disconnect()


# ---------------------------------------------------------------- rendering and building


def test_render_separates_the_listeners_for_docker_compose(tmp_path: Path) -> None:
    """`python -m launcher render`: per-listener password and ACL files (services and the
    healthcheck's login only on the service listener, none in the vehicle file), the
    plugin at its image path, and the share group in gateway.env, the same on a second
    run."""
    assert launcher_main(["render", "--out", str(tmp_path)]) == 0
    broker = tmp_path / "broker"
    conf = (broker / "mosquitto.conf").read_text()
    assert "per_listener_settings true" in conf
    assert conf.count(f"plugin {CONTAINER_PLUGIN_PATH}\n") == 2
    assert "plugin_opt_share_users gateway\n" in conf
    service_users = (broker / "mosquitto-service.passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in service_users] == ["gateway", "fleet", "health"]
    assert (broker / "mosquitto-vehicle.passwd").read_text() == ""
    assert "%u" in (broker / "mosquitto-vehicle.acl").read_text()
    acl = (broker / "mosquitto-service.acl").read_text()
    assert "%u" not in acl and "health" not in acl
    env = read_env_file(tmp_path / "gateway" / "gateway.env")
    group = env["CAAS_GATEWAY_SHARE_GROUP"]
    assert group.startswith("gw") and len(group) == 26
    assert launcher_main(["render", "--out", str(tmp_path)]) == 0
    assert read_env_file(tmp_path / "gateway" / "gateway.env")["CAAS_GATEWAY_SHARE_GROUP"] == group


def test_plugin_is_built_when_missing_or_stale(tmp_path: Path) -> None:
    """build_plugin compiles the .so when it is missing, reuses it while it is newer than
    its source, and compiles it again once the source changes."""
    source = tmp_path / "caas_auth.c"
    shutil.copy(PLUGIN_SOURCE, source)
    built = build_plugin(source, tmp_path / "build")
    assert built == tmp_path / "build" / "caas_auth.so"
    assert built.read_bytes()[:4] == b"\x7fELF"
    first = built.stat().st_mtime_ns
    assert build_plugin(source, tmp_path / "build").stat().st_mtime_ns == first
    later = built.stat().st_mtime + 10
    os.utime(source, (later, later))
    assert build_plugin(source, tmp_path / "build").stat().st_mtime_ns != first


def test_plugin_build_without_compiler_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No gcc on PATH: one line naming the packages to install."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PluginBuildFailed) as caught:
        build_plugin(PLUGIN_SOURCE, tmp_path / "build")
    message = str(caught.value)
    assert "\n" not in message
    assert "no C compiler" in message and "mosquitto-dev" in message and "setup.sh" in message


def test_plugin_build_without_headers_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compiler that cannot find the mosquitto headers: one line naming the packages."""
    fake = tmp_path / "bin" / "gcc"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'caas_auth.c:29:10: fatal error: mosquitto_broker.h: No such file or directory' >&2\n"
        "echo 'compilation terminated.' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(PluginBuildFailed) as caught:
        build_plugin(PLUGIN_SOURCE, tmp_path / "build")
    message = str(caught.value)
    assert "\n" not in message
    assert "headers are missing" in message and "libmosquitto-dev" in message
    assert not (tmp_path / "build" / "caas_auth.so").exists()
