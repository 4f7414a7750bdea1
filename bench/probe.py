"""A gateway-side request/response client for the fleet: signs commands, publishes
them with the MQTT 5 request/response properties, and matches answers by correlation.

Used by the fleet scale benchmark, the demo's traffic and the integration tests. It
is deliberately independent of the simulator's code: it only speaks docs/spec.md §2.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from protocol.codec import loads_object
from protocol.commands import OutgoingCommand, build_command, command_properties
from protocol.models import CommandType
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection
from protocol.signing import Signer
from protocol.timeutil import Clock, SystemClock
from protocol.topics import Topics


@dataclass
class Answer:
    body: dict[str, Any]
    rtt_s: float
    correlation: bytes | None
    topic: str


@dataclass
class ProbeStats:
    sent: int = 0
    answered: int = 0
    unmatched: int = 0
    rtts_s: list[float] = field(default_factory=list)

    def percentile_ms(self, q: float) -> float:
        if not self.rtts_s:
            return 0.0
        if len(self.rtts_s) == 1:
            return self.rtts_s[0] * 1000
        return statistics.quantiles(self.rtts_s, n=100)[max(0, int(q) - 1)] * 1000


class FleetProbe:
    def __init__(
        self,
        broker: BrokerAddress,
        signer: Signer,
        topics: Topics,
        client_id: str = "probe",
        clock: Clock | None = None,
        ttl_s: float = 60.0,
    ) -> None:
        self.signer = signer
        self.topics = topics
        self.clock = clock or SystemClock()
        self.ttl_s = ttl_s
        self.stats = ProbeStats()
        self.answers: dict[str, list[Answer]] = {}  # command_id → every answer seen
        self._waiters: dict[str, asyncio.Future[Answer]] = {}
        self._sent_at: dict[str, float] = {}
        self.conn = MqttConnection(
            broker,
            ConnectionOptions(client_id=client_id, subscriptions=[(topics.all_of("responses"), 1)]),
            on_message=self._on_message,
        )

    async def __aenter__(self) -> FleetProbe:
        await self.conn.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.disconnect()

    def command(self, vin: str, ctype: CommandType, **kw: Any) -> OutgoingCommand:
        return build_command(
            self.signer, vin=vin, type=ctype, now=self.clock.now(), ttl_s=self.ttl_s, **kw
        )

    def send(
        self, command: OutgoingCommand, payload: bytes | None = None
    ) -> asyncio.Future[Answer]:
        """Publish ``command`` (or raw ``payload`` under its properties); a future answer."""
        waiter = self._waiters.get(command.command_id)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[command.command_id] = waiter
        self._sent_at[command.command_id] = time.monotonic()
        props = command_properties(self.topics, command, self.clock.now())
        self.conn.publish(
            self.topics.commands(command.vin), payload or command.payload, 1, False, props
        )
        self.stats.sent += 1
        return waiter

    async def request(self, command: OutgoingCommand, timeout_s: float = 5.0) -> dict[str, Any]:
        answer = await asyncio.wait_for(asyncio.shield(self.send(command)), timeout_s)
        return answer.body

    async def ask(
        self, vin: str, ctype: CommandType, timeout_s: float = 5.0, **kw: Any
    ) -> dict[str, Any]:
        return await self.request(self.command(vin, ctype, **kw), timeout_s)

    async def expect_silence(self, command_id: str, within_s: float) -> bool:
        """True when no answer to ``command_id`` arrives within ``within_s``."""
        waiter = self._waiters.get(command_id)
        if waiter is None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), within_s)
            return False
        return True

    def _on_message(self, message: paho.MQTTMessage) -> None:
        try:
            body = loads_object(bytes(message.payload))
        except ValueError:
            self.stats.unmatched += 1
            return
        command_id = str(body.get("command_id"))
        correlation = getattr(message.properties, "CorrelationData", None)
        sent_at = self._sent_at.get(command_id)
        rtt = time.monotonic() - sent_at if sent_at else 0.0
        answer = Answer(body, rtt, correlation, message.topic)
        first = command_id not in self.answers
        self.answers.setdefault(command_id, []).append(answer)
        waiter = self._waiters.get(command_id)
        if waiter is None:
            self.stats.unmatched += 1
        elif first:
            self.stats.answered += 1
            self.stats.rtts_s.append(rtt)
            if not waiter.done():
                waiter.set_result(answer)
