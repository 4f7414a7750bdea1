"""The gateway's MQTT side: one connection per worker, signed commands out, vehicle
messages in.

Commands carry the MQTT 5 request/response properties (Response Topic, Correlation
Data = command_id, Message Expiry). Responses, state and presence arrive through the
shared subscriptions ``$share/<group>/...``: each message goes to one worker, which
checks its topic and size and hands it to the inbound backlog (bounded in bytes,
``backlog``); the matching to an activation goes through Redis (``command_id →
activation``), so it does not matter which worker sent the command. The group is
``CAAS_GATEWAY_SHARE_GROUP``, secret per deployment (docs/protocol.md).
"""

from __future__ import annotations

import logging

import paho.mqtt.client as paho

from gateway.activation import Activation
from gateway.backlog import Backlog, Inbound
from gateway.events import Send
from gateway.intake import check_correlation
from gateway.rejections import Rejections
from protocol.codec import MAX_PAYLOAD_BYTES
from protocol.commands import OutgoingCommand, build_command, command_properties
from protocol.errors import MqttError, PayloadRejected
from protocol.models import FEATURE_COMMANDS, CommandType, is_valid_vin
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection
from protocol.signing import Signer
from protocol.timeutil import Clock
from protocol.topics import Topics

log = logging.getLogger(__name__)
INBOUND_LEAVES = ("responses", "state", "presence")


class Dispatcher:
    def __init__(
        self,
        broker: BrokerAddress,
        topics: Topics,
        signer: Signer,
        clock: Clock,
        client_id: str,
        *,
        share_group: str,
        rejections: Rejections,
        inbound_max_bytes: int,
        keepalive_s: int,
    ) -> None:
        self.topics = topics
        self.signer = signer
        self.clock = clock
        self.rejections = rejections
        self.send_failures = 0  # commands the connection refused (logged, not raised)
        options = ConnectionOptions(
            client_id=client_id,
            clean_start=True,
            keepalive_s=keepalive_s,
            max_inflight=1000,
            subscriptions=[(topics.shared(leaf, share_group), 1) for leaf in INBOUND_LEAVES],
        )
        self.conn = MqttConnection(broker, options, on_message=self.accept)
        self.inbound = Backlog(inbound_max_bytes, self.conn.pause_reading, self.conn.resume_reading)

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

    def build_query(self, vin: str, ctype: CommandType, ttl_s: float) -> OutgoingCommand:
        """A live status/diagnostics command (not tied to an activation), not yet sent."""
        return build_command(self.signer, vin=vin, type=ctype, now=self.clock.now(), ttl_s=ttl_s)

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
    def accept(self, message: paho.MQTTMessage) -> None:
        """Cheap checks at the socket (topic, size), then into the backlog."""
        parsed = self.topics.parse(message.topic)
        if parsed is None or parsed[1] not in INBOUND_LEAVES or not is_valid_vin(parsed[0]):
            self.rejections.count("other", "-", PayloadRejected("topic", "not a vehicle topic"))
            return
        vin, leaf = parsed
        correlation = getattr(message.properties, "CorrelationData", None)
        try:
            if len(message.payload) > MAX_PAYLOAD_BYTES:
                raise PayloadRejected("too_large", f"{len(message.payload)} bytes")
            check_correlation(correlation)
        except PayloadRejected as exc:
            self.rejections.count(leaf, vin, exc)
            return
        self.enqueue(Inbound(leaf, vin, bytes(message.payload), correlation, self.clock.now()))

    def enqueue(self, item: Inbound) -> None:
        if not self.inbound.put(item):  # the ack timeout and status query recover it
            self.rejections.count(item.leaf, item.vin, PayloadRejected("backlog"))
