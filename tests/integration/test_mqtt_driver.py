"""protocol/mqtt.py against the real broker: reconnects restore subscriptions, flush,
publishes made while the broker is down."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections import Counter
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from launcher.stack import LocalStack
from protocol.errors import MqttPublishRefused, MqttTimeout
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection, Will
from protocol.topics import Topics
from tests.helpers import save_broker_persistence, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def strip_subscription(stack: LocalStack, client_id: str, topic: str) -> None:
    """Take over ``client_id``'s persistent session (the effective, namespaced id) and
    unsubscribe ``topic`` in it: what a broker restored from an older save hands
    back (session present, stale)."""
    addr = stack.broker.fleet_address()
    done = threading.Event()
    intruder = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    intruder.username_pw_set(addr.username, addr.password)
    intruder.on_unsubscribe = lambda *args: done.set()
    keep = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    keep.SessionExpiryInterval = 60  # without it the session would end with the intruder
    intruder.connect(addr.host, addr.port, clean_start=False, properties=keep)
    intruder.loop_start()
    try:
        intruder.unsubscribe(topic)
        assert done.wait(5), "no UNSUBACK"
        intruder.disconnect()
    finally:
        intruder.loop_stop()


async def test_reconnect_resubscribes_even_when_session_is_present(
    stack: LocalStack, topics: Topics
) -> None:
    """A resumed session that lost our subscription still gets it back on reconnect."""
    client_id = f"resub-{uuid.uuid4().hex[:8]}"
    topic = topics.commands("V" * 17)
    received: list[bytes] = []
    conn = MqttConnection(
        stack.broker.fleet_address(),
        ConnectionOptions(
            client_id=client_id, clean_start=False, session_expiry_s=60, subscriptions=[(topic, 1)]
        ),
        on_message=lambda m: received.append(bytes(m.payload)),
    )
    await conn.connect(5)
    await asyncio.to_thread(strip_subscription, stack, conn.client_id, topic)
    await wait_until(lambda: conn.reconnects >= 1 and conn.ready.is_set(), timeout_s=10)
    sender = MqttConnection(
        stack.broker.gateway_address(), ConnectionOptions(client_id=f"s-{uuid.uuid4().hex[:6]}")
    )
    await sender.connect(5)
    try:
        await sender.publish_and_wait(topic, b"after-reconnect")
        await wait_until(lambda: received == [b"after-reconnect"])
    finally:
        await sender.disconnect()
        await conn.disconnect()


async def test_flush_waits_for_every_acknowledgement(stack: LocalStack, topics: Topics) -> None:
    """flush() returns once every QoS 1 publish so far is acknowledged, not before."""
    conn = MqttConnection(
        stack.broker.fleet_address(), ConnectionOptions(client_id=f"f-{uuid.uuid4().hex[:6]}")
    )
    await conn.connect(5)
    try:
        for i in range(500):
            conn.publish(topics.state("V" * 17), f"{i}".encode(), retain=False)
        assert not conn._drained.is_set()
        await conn.flush(10)
        assert conn._unacked == set()
    finally:
        await conn.disconnect()


class CountingSocket:
    """Counts the send() calls made on a socket (the attribute itself is read-only)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.sends: list[int] = []

    def send(self, data: bytes) -> int:
        self.sends.append(len(data))
        return int(self.real.send(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_writes_are_coalesced_and_a_clean_disconnect_still_reaches_the_broker(
    stack: LocalStack, topics: Topics
) -> None:
    """Packets queued in one iteration go out in one send(), in order; the DISCONNECT
    paho writes right before closing the socket is flushed (no Will), while a dropped
    connection's Will does fire (so the check can fail)."""
    clean_vin, dropped_vin = "C" * 17, "D" * 17
    received: list[tuple[str, bytes]] = []
    watcher = MqttConnection(
        stack.broker.gateway_address(),
        ConnectionOptions(
            client_id=f"watch-{uuid.uuid4().hex[:8]}",
            subscriptions=[(topics.presence(clean_vin), 1), (topics.presence(dropped_vin), 1)],
        ),
        on_message=lambda m: received.append((m.topic, bytes(m.payload))),
    )
    await watcher.connect(5)

    def with_will(vin: str) -> MqttConnection:
        will = Will(topics.presence(vin), b"will", retain=False)
        options = ConnectionOptions(
            client_id=f"will-{uuid.uuid4().hex[:8]}", will=will, auto_reconnect=False
        )
        return MqttConnection(stack.broker.fleet_address(), options)

    clean, dropped = with_will(clean_vin), with_will(dropped_vin)
    await clean.connect(5)
    await dropped.connect(5)
    counting = CountingSocket(clean._client._sock)
    clean._client._sock = counting  # type: ignore[assignment]
    for n in range(20):  # one iteration: 20 PUBLISH packets for the buffer
        clean.publish(topics.presence(clean_vin), f"{n}".encode(), qos=1)
    await clean.flush(5)
    clean._client._sock = counting.real
    sends = counting.sends
    assert len(sends) == 1, "the 20 publishes went out in one send()"
    await wait_until(lambda: len(received) == 20)
    assert [p for _, p in received] == [f"{n}".encode() for n in range(20)]

    await clean.disconnect()
    dropped_socket = dropped._client.socket()
    assert dropped_socket is not None
    dropped_socket.shutdown(socket.SHUT_RDWR)  # no DISCONNECT: the broker sends the Will
    await wait_until(lambda: (topics.presence(dropped_vin), b"will") in received)
    await asyncio.sleep(0.3)
    assert (topics.presence(clean_vin), b"will") not in received
    await dropped.disconnect()
    await watcher.disconnect()


@pytest.mark.parametrize("clean_start", [True, False], ids=["clean-start", "persistent-session"])
async def test_qos1_publishes_made_while_the_broker_is_down_arrive_after_its_restart(
    own_stack: LocalStack, topics: Topics, clean_start: bool, record_property: Any
) -> None:
    """200 QoS 1 publishes (and a publish_and_wait) made while the broker is SIGKILLed
    raise nothing and all arrive after its restart; flush() then returns."""
    broker = own_stack.broker
    topic = topics.state("V" * 17)
    received: Counter[bytes] = Counter()
    # the subscriber's persistent session is saved before the kill, so the broker queues
    # for it whatever the publisher resends, whichever of the two reconnects first
    sub = MqttConnection(
        broker.gateway_address(),
        ConnectionOptions(
            client_id=f"sub-{uuid.uuid4().hex[:8]}",
            clean_start=False,
            session_expiry_s=300,
            subscriptions=[(topic, 1)],
        ),
        on_message=lambda m: received.update([bytes(m.payload)]),
    )
    pub = MqttConnection(
        broker.fleet_address(),
        ConnectionOptions(
            client_id=f"pub-{uuid.uuid4().hex[:8]}",
            clean_start=clean_start,
            session_expiry_s=0 if clean_start else 300,
        ),
    )
    await sub.connect(5)
    await pub.connect(5)
    try:
        await pub.publish_and_wait(topic, b"before")
        await asyncio.to_thread(save_broker_persistence, broker)
        await asyncio.to_thread(broker.kill)
        await wait_until(lambda: not pub.connected.is_set() and not sub.connected.is_set())
        payloads = [f"m{i}".encode() for i in range(200)]
        for payload in payloads:
            pub.publish(topic, payload, qos=1)
        assert len(pub._unacked) == 200
        waited = asyncio.create_task(pub.publish_and_wait(topic, b"waited", timeout_s=20))
        await asyncio.sleep(0.3)  # still down: the waiter must keep waiting, not fail
        assert not waited.done()
        await asyncio.to_thread(broker.start)
        await pub.flush(20)
        await waited
        assert pub.reconnects >= 1 and pub._unacked == set()
        await wait_until(lambda: all(p in received for p in [*payloads, b"waited"]), 10)
        duplicates = sum(n - 1 for p, n in received.items() if p != b"before" and n > 1)
        record_property("duplicates", duplicates)
        print(f"delivered={len(payloads) + 1} duplicates={duplicates}")
    finally:
        await pub.disconnect()
        await sub.disconnect()


async def test_qos0_while_disconnected_is_counted_and_a_refused_publish_raises(
    topics: Topics,
) -> None:
    """QoS 0 with no connection is dropped and counted; a publish paho refuses to queue
    raises MqttPublishRefused; QoS 1 with no connection is queued, not refused."""
    conn = MqttConnection(
        BrokerAddress("127.0.0.1", 1), ConnectionOptions(client_id=f"q-{uuid.uuid4().hex[:6]}")
    )
    topic = topics.state("Q" * 17)
    conn.publish(topic, b"lost", qos=0)
    assert conn.dropped_qos0 == 1
    conn._client.max_queued_messages_set(1)  # the driver sets no limit; force one here
    conn.publish(topic, b"queued", qos=1)
    with pytest.raises(MqttPublishRefused, match="queue"):
        conn.publish(topic, b"refused", qos=1)
    assert len(conn._unacked) == 1


async def test_a_publish_after_closing_an_unanswered_connect_is_queued(topics: Topics) -> None:
    """disconnect() of a connection whose CONNECT got no CONNACK leaves no closed socket
    behind in paho: a publish made afterwards is queued, it does not raise."""
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = MqttConnection(
        BrokerAddress("127.0.0.1", port), ConnectionOptions(client_id=f"u-{uuid.uuid4().hex[:6]}")
    )
    try:
        with pytest.raises(MqttTimeout):
            await conn.connect(0.3)
        await conn.disconnect()
        conn.publish(topics.state("U" * 17), b"later", qos=1)
        assert len(conn._unacked) == 1
    finally:
        server.close()


async def test_the_connect_hook_publishes_after_what_was_queued_during_the_outage(
    own_stack: LocalStack, topics: Topics
) -> None:
    """After a reconnect, what the connect hook publishes goes out behind the messages
    queued while the broker was down: a stale retained value cannot overwrite it."""
    broker = own_stack.broker
    topic = topics.state("H" * 17)
    current = [b"first"]
    conn = MqttConnection(
        broker.fleet_address(),
        ConnectionOptions(client_id=f"h-{uuid.uuid4().hex[:6]}"),
        on_connect=lambda c, resumed: c.publish(topic, current[0], retain=True) and None,
    )
    await conn.connect(5)
    try:
        assert len(conn._unacked) == 1, "the hook has run when connect() returns"
        await conn.flush(5)
        await asyncio.to_thread(broker.kill)
        (broker.settings.run_dir / "mosquitto.db").unlink(missing_ok=True)
        await wait_until(lambda: not conn.connected.is_set())
        conn.publish(topic, b"queued-while-down", retain=True)
        current[0] = b"announced-after-reconnect"
        await asyncio.to_thread(broker.start)
        await wait_until(lambda: conn.reconnects >= 1, timeout_s=10)
        await conn.flush(10)
    finally:
        await conn.disconnect()
    retained: list[bytes] = []
    reader = MqttConnection(
        broker.gateway_address(),
        ConnectionOptions(client_id=f"r-{uuid.uuid4().hex[:6]}", subscriptions=[(topic, 1)]),
        on_message=lambda m: retained.append(bytes(m.payload)),
    )
    await reader.connect(5)
    try:
        await wait_until(lambda: retained)
        assert retained == [b"announced-after-reconnect"]
    finally:
        await reader.disconnect()
