"""Building signed commands and their MQTT 5 publish properties (docs/spec.md §2.1)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.codec import canonical_bytes
from protocol.models import PROTOCOL_VERSION, CommandType
from protocol.paho_fast import FastProperties
from protocol.signing import Signer
from protocol.timeutil import format_ts
from protocol.topics import Topics


@dataclass(frozen=True, slots=True)
class OutgoingCommand:
    command_id: str
    vin: str
    body: dict[str, Any]
    payload: bytes
    issued_at: float
    expires_at: float


def build_command(
    signer: Signer,
    *,
    vin: str,
    type: CommandType,
    now: float,
    ttl_s: float,
    feature: str | None = None,
    activation_id: str | None = None,
    attempt: int = 1,
    command_id: str | None = None,
) -> OutgoingCommand:
    """A fresh signed command; every send gets its own ``command_id``."""
    command_id = command_id or str(uuid.uuid4())
    expires_at = now + ttl_s
    body = signer.sign(
        {
            "v": PROTOCOL_VERSION,
            "command_id": command_id,
            "type": type.value,
            "vin": vin,
            "feature": feature,
            "activation_id": activation_id,
            "attempt": attempt,
            "issued_at": format_ts(now),
            "expires_at": format_ts(expires_at),
        }
    )
    return OutgoingCommand(command_id, vin, body, canonical_bytes(body), now, expires_at)


def message_expiry_s(expires_at: float, now: float) -> int:
    """Whole seconds left until ``expires_at``, at least 1."""
    return max(1, math.floor(expires_at - now))


def command_properties(topics: Topics, command: OutgoingCommand, now: float) -> Properties:
    props = FastProperties(PacketTypes.PUBLISH)
    props.ResponseTopic = topics.responses(command.vin)
    props.CorrelationData = command.command_id.encode()
    props.MessageExpiryInterval = message_expiry_s(command.expires_at, now)
    return props


def response_properties(correlation: bytes | None) -> Properties | None:
    if correlation is None:
        return None
    props = FastProperties(PacketTypes.PUBLISH)
    props.CorrelationData = correlation
    return props
