"""protocol/mqtt.py against the real broker: reconnects restore subscriptions, flush."""

from __future__ import annotations

import asyncio
import threading
import uuid

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from launcher.stack import LocalStack
from protocol.mqtt import ConnectionOptions, MqttConnection
from protocol.topics import Topics
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def strip_subscription(stack: LocalStack, client_id: str, topic: str) -> None:
    """Take over ``client_id``'s persistent session and unsubscribe ``topic`` in it:
    what a broker restored from an older autosave hands back (session present, stale)."""
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
    await asyncio.to_thread(strip_subscription, stack, client_id, topic)
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
