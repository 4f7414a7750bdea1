"""The gateway's MQTT side: one connection per worker, signed commands out, vehicle
messages in.

Commands carry the MQTT 5 request/response properties (Response Topic, Correlation
Data = command_id, Message Expiry). Responses, state and presence arrive through the
shared subscriptions ``$share/gateway/...``: each message goes to one worker, which
hands it to the inbound queue; the matching to an activation goes through Redis
(``command_id → activation``), so it does not matter which worker sent the command.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import paho.mqtt.client as paho

from gateway.activation import Activation
from gateway.events import Send
from protocol.commands import OutgoingCommand, build_command, command_properties
from protocol.errors import MqttError
from protocol.models import FEATURE_COMMANDS, CommandType
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection
from protocol.signing import Signer
from protocol.timeutil import Clock
from protocol.topics import Topics

log = logging.getLogger(__name__)
INBOUND_LEAVES = ("responses", "state", "presence")
INBOUND_QUEUE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class Inbound:
    leaf: str
    vin: str
    payload: bytes
    correlation: bytes | None
    recv_at: float


class Dispatcher:
    send_failures = 0  # commands the connection refused (logged, not raised)

    def __init__(
        self,
        broker: BrokerAddress,
        topics: Topics,
        signer: Signer,
        clock: Clock,
        client_id: str,
    ) -> None:
        self.topics = topics
        self.signer = signer
        self.clock = clock
        self.inbound: asyncio.Queue[Inbound] = asyncio.Queue(INBOUND_QUEUE_MAX)
        self.dropped = 0
        options = ConnectionOptions(
            client_id=client_id,
            clean_start=True,
            keepalive_s=15,
            max_inflight=1000,
            subscriptions=[(topics.shared(leaf), 1) for leaf in INBOUND_LEAVES],
        )
        self.conn = MqttConnection(broker, options, on_message=self._on_message)

    async def start(self, timeout_s: float = 15.0) -> None:
        await self.conn.connect(timeout_s)

    async def stop(self) -> None:
        await self.conn.disconnect()

    @property
    def connected(self) -> bool:
        return self.conn.connected.is_set()

    # ------------------------------------------------------------ out
    async def send_command(self, act: Activation, send: Send) -> None:
        feature_command = send.type in FEATURE_COMMANDS
        command = build_command(
            self.signer,
            vin=act.vin,
            type=send.type,
            now=self.clock.now(),
            ttl_s=send.ttl_s,
            feature=act.feature if feature_command else None,
            activation_id=act.activation_id if feature_command else None,
            attempt=send.attempt,
            command_id=send.command_id,
        )
        self.publish(command)

    def query(self, vin: str, ctype: CommandType, ttl_s: float) -> OutgoingCommand:
        """A live status/diagnostics query (not tied to an activation); sent at once."""
        command = build_command(self.signer, vin=vin, type=ctype, now=self.clock.now(), ttl_s=ttl_s)
        self.publish(command)
        return command

    def publish(self, command: OutgoingCommand) -> None:
        """Hand the command to the connection; never raises. A broker outage does not
        fail it (QoS 1 is queued and resent after the reconnect); a publish the client
        refuses is logged in one line and counted, and its activation's ack timeout and
        status query recover it (docs/gateway.md, crash-safety point 5)."""
        props = command_properties(self.topics, command, self.clock.now())
        ctype = str(command.body["type"])
        try:
            self.conn.publish(self.topics.commands(command.vin), command.payload, 1, False, props)
        except MqttError as exc:
            self.send_failures += 1
            log.warning(
                "command.send_failed vin=%s type=%s command_id=%s error=%s",
                command.vin,
                ctype,
                command.command_id,
                exc,
            )
            return
        log.debug(
            "command.sent vin=%s type=%s command_id=%s", command.vin, ctype, command.command_id
        )

    # ------------------------------------------------------------ in
    def _on_message(self, message: paho.MQTTMessage) -> None:
        parsed = self.topics.parse(message.topic)
        if parsed is None or parsed[1] not in INBOUND_LEAVES:
            return
        correlation = getattr(message.properties, "CorrelationData", None)
        item = Inbound(parsed[1], parsed[0], bytes(message.payload), correlation, self.clock.now())
        try:
            self.inbound.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1  # the ack timeout and status query recover a lost response
