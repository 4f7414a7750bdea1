"""FastProperties packs and unpacks exactly like paho's own Properties."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes

from protocol import paho_fast
from protocol.paho_fast import FastProperties

SAMPLES: list[tuple[int, dict[str, Any]]] = [
    (
        PacketTypes.PUBLISH,
        {
            "ResponseTopic": "a/b",
            "CorrelationData": b"\x00id",
            "MessageExpiryInterval": 30,
            "PayloadFormatIndicator": 1,
            "ContentType": "application/json",
            "UserProperty": [("k", "v"), ("k2", "v2")],
        },
    ),
    (
        PacketTypes.CONNECT,
        {
            "SessionExpiryInterval": 3600,
            "ReceiveMaximum": 64,
            "MaximumPacketSize": 262144,
            "RequestProblemInformation": 1,
        },
    ),
    (PacketTypes.SUBSCRIBE, {"SubscriptionIdentifier": 7}),
    (PacketTypes.PUBACK, {"ReasonString": "ok"}),
]


def fill(cls: Any, packet_type: int, values: dict[str, Any]) -> Any:
    props = cls(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


@pytest.mark.parametrize(("packet_type", "values"), SAMPLES)
def test_same_bytes_and_same_decode(packet_type: int, values: dict[str, Any]) -> None:
    """Byte-identical encoding, and each decodes the other's bytes to the same attributes."""
    original = fill(paho_fast._ORIGINAL, packet_type, values)
    fast = fill(FastProperties, packet_type, values)
    assert fast.pack() == original.pack()
    decoded_fast = FastProperties(packet_type).unpack(original.pack()[0:])[0]
    decoded_orig = paho_fast._ORIGINAL(packet_type).unpack(fast.pack())[0]
    assert decoded_fast.json() == decoded_orig.json() == original.json()
    assert fast.isEmpty() is False
    fast.clear()
    assert fast.isEmpty() is True


def test_same_validation_errors() -> None:
    """Unknown names, wrong packet types and out-of-range values are refused as before."""
    for cls in (paho_fast._ORIGINAL, FastProperties):
        with pytest.raises(paho_fast.MQTTException):
            cls(PacketTypes.PUBLISH).NoSuchThing = 1
        with pytest.raises(paho_fast.MQTTException):
            cls(PacketTypes.PUBLISH).SessionExpiryInterval = 1
        with pytest.raises(paho_fast.MQTTException):
            cls(PacketTypes.CONNECT).ReceiveMaximum = 0


def test_installed_into_paho() -> None:
    """paho's decoder constructs FastProperties once protocol is imported."""
    import paho.mqtt._packet as packet

    assert packet.Properties is FastProperties  # type: ignore[attr-defined]
