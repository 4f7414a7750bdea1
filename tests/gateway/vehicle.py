"""A scripted vehicle that speaks docs/spec.md §2 on its own (independent of vehicle_sim).

It publishes retained presence and state, records every command with its arrival
time, and answers each feature command by the next step of its script:

    "ack"            act and ack
    "nack:<reason>"  nack with that reason
    "silent"         act, never answer (the ack timeout path)
    "ignore"         do not act, never answer
    "late:<s>"       act, answer ack after <s> seconds
    "dup"            act, ack twice
    "garbage"        act, answer with bytes that are not a Response

Status and diagnostics commands are answered truthfully; ``status_answers`` limits
how many (None: all).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from protocol.codec import canonical_bytes, loads_object
from protocol.commands import response_properties
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection
from protocol.timeutil import format_ts
from protocol.topics import Topics

VIN = "CAATR1234SB000901"


@dataclass
class Received:
    body: dict[str, Any]
    at: float  # time.monotonic()
    correlation: bytes | None
    response_topic: str | None = None
    expiry_s: int | None = None


@dataclass
class ScriptedVehicle:
    broker: BrokerAddress
    topics: Topics
    script: list[str]
    vin: str = VIN
    status_answers: int | None = None
    stale_state: dict[str, Any] | None = None  # answer with this state instead of the live one
    retry_after_s: float | None = None  # the hint on every nack (the gateway obeys it)
    active: set[str] = field(default_factory=set)
    commands: list[Received] = field(default_factory=list)
    seq: int = 0
    moving: bool = False
    _conn: MqttConnection | None = None

    async def __aenter__(self) -> ScriptedVehicle:
        self._conn = MqttConnection(
            self.broker,
            ConnectionOptions(
                client_id=f"scripted-{uuid.uuid4().hex[:8]}",
                subscriptions=[(self.topics.commands(self.vin), 1)],
            ),
            on_message=self._on_command,
        )
        await self._conn.connect()
        await self.publish_presence(True)
        await self.publish_state()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._conn is not None
        await self._conn.disconnect()

    # ------------------------------------------------------------ publishing
    def state(self) -> dict[str, Any]:
        return {
            "vin": self.vin, "model": "Tourer", "firmware": "5.0.2", "online": True,
            "power": "on" if self.moving else "off", "moving": self.moving,
            "speed_kmh": 40.0 if self.moving else 0.0, "gear": "D" if self.moving else "P",
            "busy": False, "installed_features": ["climate_plus", "power_boost_50"],
            "active_features": sorted(self.active), "seq": self.seq,
            "at": format_ts(time.time()),
        }  # fmt: skip

    async def publish_state(self) -> None:
        assert self._conn is not None
        await self._conn.publish_and_wait(
            self.topics.state(self.vin), canonical_bytes(self.state()), retain=True
        )

    async def publish_presence(self, online: bool) -> None:
        assert self._conn is not None
        body = {"vin": self.vin, "online": online, "at": format_ts(time.time())}
        await self._conn.publish_and_wait(
            self.topics.presence(self.vin), canonical_bytes(body), retain=True
        )

    async def publish_raw(self, leaf: str, *payloads: bytes, retain: bool = False) -> None:
        """Anything at all on one of this vehicle's own topics (a broken or hostile car),
        pipelined; returns when the broker has taken every one."""
        assert self._conn is not None
        topic = {"state": self.topics.state, "presence": self.topics.presence,
                 "responses": self.topics.responses}[leaf](self.vin)  # fmt: skip
        for payload in payloads:
            self._conn.publish(topic, payload, 1, retain)
        await self._conn.flush()

    def feature_commands(self, ctype: str = "activate") -> list[Received]:
        return [c for c in self.commands if c.body.get("type") == ctype]

    # ------------------------------------------------------------ answering
    def _on_command(self, message: paho.MQTTMessage) -> None:
        body = loads_object(bytes(message.payload))
        props = message.properties
        correlation = getattr(props, "CorrelationData", None)
        self.commands.append(
            Received(
                body,
                time.monotonic(),
                correlation,
                getattr(props, "ResponseTopic", None),
                getattr(props, "MessageExpiryInterval", None),
            )
        )
        if body["type"] in ("status", "diagnostics"):
            if self.status_answers is None or self.status_answers > 0:
                if self.status_answers is not None:
                    self.status_answers -= 1
                self._answer(body, correlation, "ack", None)
            return
        step = self.script.pop(0) if self.script else "ack"
        verb, _, arg = step.partition(":")
        if verb != "ignore" and verb != "nack":
            self._act(body)
        if verb == "ack":
            self._answer(body, correlation, "ack", None)
        elif verb == "nack":
            self._answer(body, correlation, "nack", arg)
        elif verb == "dup":
            self._answer(body, correlation, "ack", None, copies=2)
        elif verb == "late":
            loop = asyncio.get_running_loop()
            loop.call_later(float(arg), self._answer, body, correlation, "ack", None)
        elif verb == "garbage":
            self._raw(body, correlation, b'{"v": 1, "command_id": 42, "status": "maybe"}')
            self._raw(body, correlation, b"\xff\xfe not json")

    def _act(self, body: dict[str, Any]) -> None:
        before = set(self.active)
        if body["type"] == "activate":
            self.active.add(body["feature"])
        else:
            self.active.discard(body["feature"])
        if self.active != before:
            self.seq += 1
            assert self._conn is not None
            self._conn.publish(
                self.topics.state(self.vin), canonical_bytes(self.state()), retain=True
            )

    def _answer(
        self,
        body: dict[str, Any],
        correlation: bytes | None,
        status: str,
        reason: str | None,
        copies: int = 1,
    ) -> None:
        hint = self.retry_after_s if reason else None
        response = {
            "v": 1, "command_id": body["command_id"], "vin": self.vin, "type": body["type"],
            "status": status, "reason": reason, "retry_after_s": hint,
            "state": self.stale_state or self.state(), "at": format_ts(time.time()),
            "diagnostics": self._diagnostics() if body["type"] == "diagnostics" else None,
        }  # fmt: skip
        for _ in range(copies):
            self._raw(body, correlation, canonical_bytes(response))

    def _raw(self, body: dict[str, Any], correlation: bytes | None, payload: bytes) -> None:
        assert self._conn is not None
        self._conn.publish(
            self.topics.responses(self.vin), payload, 1, False, response_properties(correlation)
        )

    def _diagnostics(self) -> dict[str, Any]:
        return {
            "dtcs": ["P0A80"], "battery_v": 12.3, "modem": {"rssi_dbm": -80},
            "uptime_s": 100, "recent_errors": ["boom"], "firmware": "5.0.2", "model": "Tourer",
        }  # fmt: skip


def as_json(received: Received) -> str:
    return json.dumps(received.body, sort_keys=True)
