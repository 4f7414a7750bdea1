"""The simulator's two connection modes (both implement ``runtime.Link``).

multiplexed  a few connections with the fleet identity, each subscribed to the
             ``commands`` topics of its shard of VINs. The scale mode. A connection
             has one Will, so a shard cannot fire a Will per vehicle: vehicles going
             off line publish ``online: false`` themselves (docs/protocol.md).
per-vehicle  one connection per VIN on the vehicle listener, username = client id =
             VIN, a persistent session and a Will with ``online: false``. The realism
             mode: ACLs, Wills, queued commands on reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import paho.mqtt.client as paho

from launcher.credentials import vehicle_password
from protocol.commands import response_properties
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection, Will
from protocol.topics import Topics
from vehicle_sim import vehicle as vm
from vehicle_sim.rng import stable_seed
from vehicle_sim.runtime import FleetRuntime

log = logging.getLogger(__name__)

CONNECT_CONCURRENCY = 200  # connections opened at once in per-vehicle mode
SESSION_EXPIRY_S = 3600


def is_replayed_retained(runtime: FleetRuntime, message: paho.MQTTMessage) -> bool:
    """Commands are never retained (SPEC §2): one that comes with the retain flag is a
    stale message replayed on subscribe, and acting on it would act twice."""
    if message.retain:
        runtime.stats.dropped["retained_command"] += 1
        return True
    return False


def arrival_of(message: paho.MQTTMessage) -> vm.Arrival:
    props: Any = message.properties
    return vm.Arrival(
        payload=bytes(message.payload),
        response_topic=getattr(props, "ResponseTopic", None),
        correlation=getattr(props, "CorrelationData", None),
    )


class MultiplexedLink:
    def __init__(
        self,
        runtime: FleetRuntime,
        broker: BrokerAddress,
        topics: Topics,
        shards: int = 4,
        client_prefix: str = "sim",
    ) -> None:
        self.runtime = runtime
        self.broker = broker
        self.topics = topics
        vins = list(runtime.specs)
        self.shard_count = max(1, min(shards, len(vins)))
        self.shard_of = {vin: i % self.shard_count for i, vin in enumerate(vins)}
        self.shard_vins: list[list[str]] = [[] for _ in range(self.shard_count)]
        for vin, shard in self.shard_of.items():
            self.shard_vins[shard].append(vin)
        # Stable for the same fleet (sessions resume across restarts), distinct for any other
        # fleet or topic root (never resume someone else's session and subscriptions).
        fleet_id = stable_seed(topics.root, runtime.ctx.seed, len(vins), self.shard_count)
        self.client_prefix = f"{client_prefix}-{fleet_id:016x}"
        self.connections: list[MqttConnection] = []

    async def start(self, timeout_s: float = 120.0) -> None:
        self.connections = [self._connection(i) for i in range(self.shard_count)]
        await asyncio.gather(*(conn.connect(timeout_s) for conn in self.connections))
        # "up" means announced: every vehicle's presence and state accepted by the broker
        await asyncio.gather(*(conn.flush(timeout_s) for conn in self.connections))

    def _connection(self, shard: int) -> MqttConnection:
        options = ConnectionOptions(
            client_id=f"{self.client_prefix}-{shard}",
            clean_start=False,
            session_expiry_s=SESSION_EXPIRY_S,
            subscriptions=[(self.topics.commands(vin), 1) for vin in self.shard_vins[shard]],
        )
        return MqttConnection(
            self.broker, options, on_message=self._on_message, on_connect=self._on_connect
        )

    def _on_message(self, message: paho.MQTTMessage) -> None:
        parsed = self.topics.parse(message.topic)
        if parsed is None or parsed[1] != "commands":
            self.runtime.stats.dropped["foreign_topic"] += 1
            return
        vin = parsed[0]
        if is_replayed_retained(self.runtime, message):
            return
        if not self.runtime.vehicles[vin].online:
            # an off-line vehicle receives nothing; with one shared connection the
            # broker cannot hold its commands for later (use per-vehicle mode for that)
            self.runtime.stats.dropped["offline"] += 1
            return
        self.runtime.on_command(vin, arrival_of(message))

    def _on_connect(self, conn: MqttConnection, resumed: bool) -> None:
        shard = self.connections.index(conn) if conn in self.connections else -1
        for vin in self.shard_vins[shard] if shard >= 0 else []:
            if self.runtime.wants_online(vin):
                self.runtime.announce(vin)
            else:
                self.runtime.announce_offline(vin)

    def publish(
        self, vin: str, topic: str, payload: bytes, retain: bool, correlation: bytes | None
    ) -> None:
        conn = self.connections[self.shard_of[vin]]
        conn.publish(topic, payload, 1, retain, response_properties(correlation))

    def set_online(self, vin: str, online: bool, abrupt: bool) -> None:
        if online:
            self.runtime.announce(vin)
        else:
            self.runtime.announce_offline(vin)

    def connected_count(self) -> int:
        return sum(1 for conn in self.connections if conn.ready.is_set())

    async def stop(self) -> None:
        for vin in self.runtime.specs:
            if self.runtime.vehicles[vin].online:
                self.runtime.announce_offline(vin)
        await asyncio.gather(*(conn.disconnect() for conn in self.connections))


class PerVehicleLink:
    def __init__(
        self,
        runtime: FleetRuntime,
        broker: BrokerAddress,
        topics: Topics,
        fleet_secret: str,
    ) -> None:
        self.runtime = runtime
        self.broker = broker
        self.topics = topics
        self.fleet_secret = fleet_secret
        self.connections: dict[str, MqttConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _connection(self, vin: str) -> MqttConnection:
        will_payload = vm.presence_payload(vin, False, self.runtime.clock.now())
        options = ConnectionOptions(
            client_id=vin,
            clean_start=False,
            session_expiry_s=SESSION_EXPIRY_S,
            keepalive_s=60,
            will=Will(self.topics.presence(vin), will_payload),
            max_inflight=20,
            subscriptions=[(self.topics.commands(vin), 1)],
        )
        address = self.broker.with_credentials(vin, vehicle_password(self.fleet_secret, vin))
        return MqttConnection(
            address,
            options,
            on_message=lambda message: self._on_message(vin, message),
            on_connect=lambda conn, resumed: self.runtime.announce(vin),
        )

    async def start(self, timeout_s: float = 300.0) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def bring_up(vin: str) -> None:
            async with gate:
                if self.runtime.wants_online(vin):
                    await self._connect(vin, timeout_s)
                else:
                    await self._publish_offline_once(vin, timeout_s)

        await asyncio.gather(*(bring_up(vin) for vin in self.runtime.specs))

    async def _connect(self, vin: str, timeout_s: float = 30.0) -> None:
        conn = self.connections.get(vin) or self._connection(vin)
        self.connections[vin] = conn
        await conn.connect(timeout_s)
        await conn.flush(timeout_s)  # up = presence and state accepted by the broker

    async def _publish_offline_once(self, vin: str, timeout_s: float) -> None:
        """A vehicle that starts off line still leaves a retained ``online: false``."""
        conn = self._connection(vin)
        conn.options.subscriptions = []
        conn.options.auto_reconnect = False
        await conn.connect(timeout_s)
        now = self.runtime.clock.now()
        await conn.publish_and_wait(
            self.topics.presence(vin), vm.presence_payload(vin, False, now), retain=True
        )
        await conn.publish_and_wait(
            self.topics.state(vin), vm.state_payload(self.runtime.vehicles[vin]), retain=True
        )
        await conn.disconnect()

    def _on_message(self, vin: str, message: paho.MQTTMessage) -> None:
        if not is_replayed_retained(self.runtime, message):
            self.runtime.on_command(vin, arrival_of(message))

    def publish(
        self, vin: str, topic: str, payload: bytes, retain: bool, correlation: bytes | None
    ) -> None:
        conn = self.connections.get(vin)
        if conn is None or not conn.connected.is_set():
            self.runtime.stats.dropped["publish_while_offline"] += 1
            return
        conn.publish(topic, payload, 1, retain, response_properties(correlation))

    def set_online(self, vin: str, online: bool, abrupt: bool) -> None:
        if online:
            self._spawn(self._connect(vin))
        elif abrupt:
            conn = self.connections.get(vin)
            if conn is not None:
                conn.drop()  # the broker publishes the Will
        else:
            self._spawn(self._go_offline_cleanly(vin))

    async def _go_offline_cleanly(self, vin: str) -> None:
        conn = self.connections.get(vin)
        if conn is None or not conn.connected.is_set():
            return
        now = self.runtime.clock.now()
        with contextlib.suppress(Exception):
            await conn.publish_and_wait(
                self.topics.presence(vin), vm.presence_payload(vin, False, now), retain=True
            )
        await conn.disconnect()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def connected_count(self) -> int:
        return sum(1 for conn in self.connections.values() if conn.ready.is_set())

    async def stop(self) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def bring_down(vin: str) -> None:
            async with gate:
                await self._go_offline_cleanly(vin)

        await asyncio.gather(*(bring_down(vin) for vin in list(self.connections)))
