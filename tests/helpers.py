"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as paho

from launcher.broker import Broker
from launcher.stack import LocalStack
from protocol.mqtt import ConnectionOptions, MqttConnection
from protocol.topics import Topics


async def wait_until(
    predicate: Callable[[], object], timeout_s: float = 5.0, interval_s: float = 0.02
) -> None:
    """Wait for ``predicate()`` to become truthy; TimeoutError with a clear message if not."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - the conditions are plain values, not events
                await asyncio.sleep(interval_s)
    except TimeoutError:
        raise TimeoutError(f"condition not met within {timeout_s}s: {predicate}") from None


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0, interval_s: float = 0.05
) -> None:
    """Wait for an async ``check()`` (an HTTP or Redis read) to come true."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():  # noqa: ASYNC110 - polling another process, no event to await
                await asyncio.sleep(interval_s)
    except TimeoutError:
        raise TimeoutError(f"condition not met within {timeout_s}s: {check}") from None


def save_broker_persistence(broker: Broker, timeout_s: float = 5.0) -> None:
    """SIGUSR1: mosquitto writes its persistence file now (sessions, subscriptions,
    retained messages), as its autosave would; blocks until the file has changed."""
    assert broker.proc is not None
    db = broker.settings.run_dir / "mosquitto.db"
    before = db.stat().st_mtime_ns if db.exists() else 0
    os.kill(broker.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout_s
    while not (db.exists() and db.stat().st_mtime_ns != before):
        assert time.monotonic() < deadline, "mosquitto did not save its persistence file"
        time.sleep(0.02)


class Watcher:
    """Gateway-side view of every vehicle's state and presence under a topic root
    (last message per topic, and how many came). ``await watcher.conn.connect()``."""

    def __init__(self, stack: LocalStack, topics: Topics) -> None:
        self.topics = topics
        self.last: dict[str, dict[str, Any]] = {}
        self.count: dict[str, int] = {}
        self.conn = MqttConnection(
            stack.broker.gateway_address(),
            ConnectionOptions(
                client_id=f"watch-{uuid.uuid4().hex[:8]}",
                subscriptions=[(topics.all_of("state"), 1), (topics.all_of("presence"), 1)],
            ),
            on_message=self._on,
        )

    def _on(self, message: paho.MQTTMessage) -> None:
        self.last[message.topic] = json.loads(message.payload)
        self.count[message.topic] = self.count.get(message.topic, 0) + 1

    def online(self) -> dict[str, bool]:
        """VIN → the last presence seen."""
        return {
            topic.split("/")[-2]: body["online"]
            for topic, body in self.last.items()
            if topic.endswith("/presence")
        }
