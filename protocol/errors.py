"""Exceptions of the protocol package.

ProtocolError
├── PayloadRejected       a wire payload refused before use (also a ValueError), with a reason
├── InvalidSignature      a signature that does not verify (or is not base64)
├── KeyFileError          a PEM file that is missing or holds the wrong key type
└── MqttError
    ├── MqttConnectError  the broker refused or could not be reached in time
    ├── MqttPublishRefused  the client would not queue a publish (its queue limit)
    └── MqttTimeout       a broker round trip (SUBACK, PUBACK) did not come back in time
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error raised by ``protocol``."""


class PayloadRejected(ProtocolError, ValueError):
    """A payload refused at the edge. ``reason`` is one of a fixed set (``too_large``,
    ``too_deep``, ``not_json``, ``non_finite``, ``not_object``, ``schema``, ...) so it can
    label a metric; ``detail`` says more, and never quotes the payload."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InvalidSignature(ProtocolError):
    """The ``sig`` of a command does not verify against the gateway key."""


class KeyFileError(ProtocolError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class MqttError(ProtocolError):
    """Base class of broker connection problems."""


class MqttConnectError(MqttError):
    def __init__(self, client_id: str, reason: str) -> None:
        super().__init__(f"MQTT connect of {client_id!r} failed: {reason}")
        self.client_id = client_id
        self.reason = reason


class MqttPublishRefused(MqttError):
    """paho would not take the message: it is neither sent nor queued for resend.

    Not raised for a broker outage (a QoS > 0 message is queued and resent after the
    reconnect, QoS 0 is dropped and counted); only when the client's queue is full.
    """

    def __init__(self, client_id: str, topic: str, reason: str) -> None:
        super().__init__(f"publish of {client_id!r} to {topic} refused: {reason}")
        self.client_id = client_id
        self.topic = topic
        self.reason = reason


class MqttTimeout(MqttError):
    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(f"{what} did not complete within {timeout_s:g}s")
        self.what = what
        self.timeout_s = timeout_s
