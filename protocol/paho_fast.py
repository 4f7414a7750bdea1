"""A faster drop-in for paho-mqtt's MQTT 5 ``Properties``.

paho 2.2 rebuilds its property tables on every ``Properties(...)`` and looks names up
by scanning them with ``str.replace``: ~38 µs per object, and it makes one for every
PUBLISH and PUBACK it sends or receives. Profiled (docs/performance.md), it was the
largest single cost of a request/response round trip.

``FastProperties`` shares the tables (built once from paho's own instance, so they
cannot drift) and keeps every validation and the exact wire encoding; a test checks
that it packs and unpacks byte-identically to the original. ``install()`` points the
two paho modules that construct properties at it. Pinned to paho-mqtt 2.2.0.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt._packet as _paho_packet
import paho.mqtt.client as _paho_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import (  # type: ignore[attr-defined]
    MQTTException,
    Properties,
    VariableByteIntegers,
)

_ORIGINAL = Properties
_PROTO: Any = _ORIGINAL(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
_TYPES: list[str] = _PROTO.types
_NAMES: dict[str, int] = _PROTO.names
_TABLE: dict[int, tuple[int, list[int]]] = _PROTO.properties
_IDENT_BY_NAME = {name.replace(" ", ""): ident for name, ident in _NAMES.items()}
_NAME_BY_IDENT = {ident: name for name, ident in _NAMES.items()}
_MULTIPLE = frozenset({11, 38})  # Subscription Identifier, User Property
_PRIVATE = frozenset({"packetType", "types", "names", "properties"})
_RANGES = {
    "ReceiveMaximum": (1, 65535),
    "TopicAlias": (1, 65535),
    "TopicAliasMaximum": (0, 65535),
    "MaximumPacketSize": (1, 268435455),
    "SubscriptionIdentifier": (1, 268435455),
    "RequestResponseInformation": (0, 1),
    "RequestProblemInformation": (0, 1),
    "PayloadFormatIndicator": (0, 1),
}


class FastProperties(Properties):
    def __init__(self, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", _TYPES)
        object.__setattr__(self, "names", _NAMES)
        object.__setattr__(self, "properties", _TABLE)

    def getIdentFromName(self, compressedName: str) -> int:
        return _IDENT_BY_NAME.get(compressedName, -1)

    def getNameFromIdent(self, identifier: int) -> str | None:
        return _NAME_BY_IDENT.get(identifier)

    def allowsMultiple(self, compressedName: str) -> bool:
        return _IDENT_BY_NAME.get(compressedName) in _MULTIPLE

    def isEmpty(self) -> bool:
        return not any(name in self.__dict__ for name in _IDENT_BY_NAME)

    def clear(self) -> None:
        for name in _IDENT_BY_NAME:
            self.__dict__.pop(name, None)

    def __setattr__(self, name: str, value: Any) -> None:
        name = name.replace(" ", "")
        if name in _PRIVATE:
            object.__setattr__(self, name, value)
            return
        ident = _IDENT_BY_NAME.get(name)
        if ident is None:
            raise MQTTException(f"Property name must be one of {_NAMES.keys()}")
        if self.packetType not in _TABLE[ident][1]:
            raise MQTTException(
                f"Property {name} does not apply to packet type "
                f"{PacketTypes.Names[self.packetType]}"
            )
        bounds = _RANGES.get(name)
        if bounds is not None and not isinstance(value, list):
            low, high = bounds
            if value < low or value > high:
                raise MQTTException(f"{name} property value must be in the range {low}-{high}")
        if ident in _MULTIPLE:
            if not isinstance(value, list):
                value = [value]
            if name in self.__dict__:
                value = self.__dict__[name] + value
        object.__setattr__(self, name, value)

    def pack(self) -> bytes:
        buffer = b""
        for name, ident in _IDENT_BY_NAME.items():
            if name not in self.__dict__:
                continue
            attr_type = _TABLE[ident][0]
            values = self.__dict__[name] if ident in _MULTIPLE else [self.__dict__[name]]
            for value in values:
                buffer += self.writeProperty(ident, attr_type, value)  # type: ignore[no-untyped-call]
        encoded: bytes = VariableByteIntegers.encode(len(buffer))  # type: ignore[no-untyped-call]
        return encoded + buffer


def install() -> None:
    """Make paho construct ``FastProperties`` (idempotent)."""
    _paho_packet.Properties = FastProperties  # type: ignore[attr-defined]
    _paho_client.Properties = FastProperties  # type: ignore[attr-defined]


install()
