"""The simulator's two connection modes (both implement ``runtime.Link``).

multiplexed  a few connections with the fleet identity, each subscribed to the
             ``commands`` topics of its shard of VINs. The scale mode. A connection
             has one Will, so a shard cannot fire a Will per vehicle: vehicles going
             off line publish ``online: false`` themselves (docs/protocol.md).
per-vehicle  one connection per VIN on the vehicle listener, username = client id =
             VIN, a persistent session and a Will with ``online: false``. The realism
             mode: ACLs, Wills, queued commands on reconnect.

Broker outages: nothing here raises. Publishes made while a connection is down are
queued by the driver (QoS 1) and sent after the reconnect, and after EVERY reconnect
each vehicle publishes its presence and current state again (retained), so a broker
that came back without its retained messages (killed, persistence old or gone) has
them again. A per-vehicle connection that a vehicle going off line could not close
while the broker was away is closed by that reconnect, after ``online: false``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import paho.mqtt.client as paho

from protocol.commands import response_properties
from protocol.credentials import vehicle_password
from protocol.errors import MqttError
from protocol.mqtt import RECONNECT_MAX_S, BrokerAddress, ConnectionOptions, MqttConnection, Will
from protocol.topics import Topics
from vehicle_sim import vehicle as vm
from vehicle_sim.rng import stable_seed
from vehicle_sim.runtime import FleetRuntime

log = logging.getLogger(__name__)

CONNECT_CONCURRENCY = 200  # connections opened at once in per-vehicle mode
SESSION_EXPIRY_S = 3600
CONNECT_TIMEOUT_S = 30.0  # one try of a per-vehicle connect (then it tries again)
RETRY_MIN_S = 0.5
OFFLINE_NOTICE_TIMEOUT_S = 10.0  # a clean disconnect waits this long for its PUBACK


def deliver(runtime: FleetRuntime, vin: str, message: paho.MQTTMessage) -> None:
    """A command off the wire for ``vin``, in either connection mode. Dropped and
    counted: one with the retain flag (commands are never retained, docs/spec.md §2: it is a
    stale message replayed on subscribe, and acting on it would act twice), and one
    reaching an off-line vehicle (with one shared connection the broker cannot hold it
    for later; a vehicle of its own connection went off line while the broker was
    away, and its connection closes shortly)."""
    if message.retain:
        runtime.stats.dropped["retained_command"] += 1
    elif not runtime.vehicles[vin].online:
        runtime.stats.dropped["offline"] += 1
    else:
        runtime.on_command(vin, arrival_of(message))


def publish_queued(
    runtime: FleetRuntime,
    conn: MqttConnection,
    vin: str,
    topic: str,
    payload: bytes,
    retain: bool,
    correlation: bytes | None,
) -> None:
    """QoS 1 through the driver, connected or not (it queues through an outage); a
    publish the client refuses is dropped and counted, never raised into a timer."""
    try:
        conn.publish(topic, payload, 1, retain, response_properties(correlation))
    except MqttError as exc:
        runtime.stats.dropped["publish_refused"] += 1
        log.warning("sim.publish_refused vin=%s topic=%s error=%s", vin, topic, exc)


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
        deliver(self.runtime, parsed[0], message)

    def _on_connect(self, conn: MqttConnection, resumed: bool) -> None:
        """After every (re)connect of a shard, resumed session or not: each of its
        vehicles says where it stands, so a broker that lost them has them again."""
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
        publish_queued(self.runtime, conn, vin, topic, payload, retain, correlation)

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
    """One connection per VIN, kept in step with the vehicle's ``online`` by one task per
    VIN at a time (``_converge``), whatever the order of mode changes and broker outages.

    The connection of an on-line vehicle is "open": up, or reconnecting by itself while
    the broker is away; its connect hook announces the vehicle after every reconnect. A
    vehicle that goes off line while its connection is down is closed by that hook once
    the broker is back (``online: false`` first, or the Will for an abrupt drop), so the
    broker never keeps an ``online: true`` it restored from persistence. A vehicle that
    comes back on line while the broker is away tries to connect until it can.
    """

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
        self._open: set[str] = set()  # VINs whose connection we opened and not closed since
        self._announced: set[str] = set()  # announced on line since they last went off line
        self._abrupt: dict[str, bool] = {}  # how each vehicle last went off line
        self._converging: dict[str, asyncio.Task[None]] = {}
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
            on_message=lambda message: deliver(self.runtime, vin, message),
            on_connect=lambda conn, resumed: self._on_connect(vin, conn),
        )

    def _on_connect(self, vin: str, conn: MqttConnection) -> None:
        """After every (re)connect: announce an on-line vehicle; close the connection of
        one that went off line while the broker was away."""
        if conn is not self.connections.get(vin):
            return  # the one-off connection of a vehicle that starts off line
        if self.runtime.wants_online(vin):
            self.runtime.announce(vin)
            self._announced.add(vin)
        else:
            self._converge_soon(vin)

    async def start(self, timeout_s: float = 300.0) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def bring_up(vin: str) -> None:
            async with gate:
                if self.runtime.wants_online(vin):
                    await self._connect(vin, timeout_s)
                else:
                    await self._publish_offline_once(vin, timeout_s)

        await asyncio.gather(*(bring_up(vin) for vin in self.runtime.specs))

    async def _connect(self, vin: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        conn = self._open_connection(vin)
        await conn.connect(timeout_s)
        await conn.flush(timeout_s)  # up = presence and state accepted by the broker

    def _open_connection(self, vin: str) -> MqttConnection:
        conn = self.connections.get(vin) or self._connection(vin)
        self.connections[vin] = conn
        self._open.add(vin)
        self._announced.discard(vin)
        return conn

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

    def publish(
        self, vin: str, topic: str, payload: bytes, retain: bool, correlation: bytes | None
    ) -> None:
        conn = self.connections.get(vin)
        if conn is None or not self.runtime.vehicles[vin].online:
            self.runtime.stats.dropped["publish_while_offline"] += 1
            return
        # connection down (broker away, or still connecting): queued, sent once it is up
        publish_queued(self.runtime, conn, vin, topic, payload, retain, correlation)

    def set_online(self, vin: str, online: bool, abrupt: bool) -> None:
        if not online:
            self._abrupt[vin] = abrupt
            self._announced.discard(vin)
        self._converge_soon(vin)

    def _converge_soon(self, vin: str) -> None:
        task = self._converging.get(vin)
        if task is None or task.done():
            self._converging[vin] = self._spawn(self._converge(vin))

    async def _converge(self, vin: str) -> None:
        """Open or close the vehicle's connection until it matches ``online`` (re-read
        after every step: the mode may change meanwhile). Never raises."""
        delay = RETRY_MIN_S
        while True:
            conn = self.connections.get(vin)
            is_open = conn is not None and vin in self._open
            if self.runtime.wants_online(vin):
                if conn is not None and is_open:
                    if conn.connected.is_set() and vin not in self._announced:
                        self.runtime.announce(vin)  # it never went down on the wire
                        self._announced.add(vin)
                    return  # up, or reconnecting: its hook announces it
                if await self._try_connect(vin):
                    delay = RETRY_MIN_S
                else:
                    await asyncio.sleep(delay)
                    delay = min(RECONNECT_MAX_S, delay * 2)
            elif conn is None or not is_open or not conn.connected.is_set():
                return  # closed; or reconnecting, and its hook closes it once it is up
            elif not await self._close(vin, conn):
                return  # the broker went away meanwhile: the hook finishes the job

    async def _try_connect(self, vin: str) -> bool:
        conn = self._open_connection(vin)
        try:
            await conn.connect(CONNECT_TIMEOUT_S)
        except MqttError as exc:
            log.info("sim.connect_retry vin=%s error=%s", vin, exc)
            self._open.discard(vin)
            await conn.disconnect()  # stop whatever is left of this try
            return False
        return True

    async def _close(self, vin: str, conn: MqttConnection) -> bool:
        """Take an off-line vehicle's connection down; False when the broker went away
        before ``online: false`` was acknowledged (the connection stays open for that)."""
        if self._abrupt.get(vin, False):
            self._open.discard(vin)
            conn.drop()  # the broker publishes the Will
            return True
        if not await self._say_offline(vin, conn) and not conn.connected.is_set():
            return False
        self._open.discard(vin)
        await conn.disconnect()
        return True

    async def _say_offline(self, vin: str, conn: MqttConnection) -> bool:
        """Retained ``online: false`` before a clean disconnect; True once acknowledged."""
        now = self.runtime.clock.now()
        try:
            await conn.publish_and_wait(
                self.topics.presence(vin),
                vm.presence_payload(vin, False, now),
                retain=True,
                timeout_s=OFFLINE_NOTICE_TIMEOUT_S,
            )
        except MqttError:
            return False
        return True

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def connected_count(self) -> int:
        return sum(1 for conn in self.connections.values() if conn.ready.is_set())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def bring_down(vin: str, conn: MqttConnection) -> None:
            async with gate:
                if vin in self._open and conn.connected.is_set():
                    await self._say_offline(vin, conn)
                self._open.discard(vin)
                await conn.disconnect()

        await asyncio.gather(*(bring_down(vin, c) for vin, c in list(self.connections.items())))
