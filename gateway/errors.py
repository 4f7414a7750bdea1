"""Exceptions of the gateway package.

GatewayError
├── ConfigError               a setting that cannot be used (missing URL, unreadable key)
├── ActivationConflict        POST /v1/activations with an id already used for another body
├── ActivationNotFound        no activation under that id
├── ActivationTerminal        cancel of an activation that already ended
├── TransitionConflict        optimistic transition lost the race too many times in a row
├── TooManyQueries            this worker already waits on MAX_WAITING live queries (503)
└── BrokerUnavailable         the worker's MQTT connection is down (503)
"""

from __future__ import annotations

from protocol.settings import ConfigError as SettingsError


class GatewayError(Exception):
    """Base class of every error raised by ``gateway``."""


class ConfigError(GatewayError, SettingsError):
    """protocol.settings.ConfigError (one line, exit code 2) raised by the gateway."""


class ActivationConflict(GatewayError):
    def __init__(self, activation_id: str) -> None:
        super().__init__(f"activation {activation_id} exists with a different request body")
        self.activation_id = activation_id


class ActivationNotFound(GatewayError):
    def __init__(self, activation_id: str) -> None:
        super().__init__(f"no activation {activation_id}")
        self.activation_id = activation_id


class ActivationTerminal(GatewayError):
    def __init__(self, activation_id: str, state: str) -> None:
        super().__init__(f"activation {activation_id} already ended in {state}")
        self.activation_id = activation_id
        self.state = state


class TransitionConflict(GatewayError):
    def __init__(self, activation_id: str, tries: int) -> None:
        super().__init__(f"activation {activation_id}: {tries} concurrent updates in a row")
        self.activation_id = activation_id
        self.tries = tries


class TooManyQueries(GatewayError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"this worker already waits on {limit} live queries")
        self.limit = limit


class BrokerUnavailable(GatewayError):
    def __init__(self) -> None:
        super().__init__("the MQTT broker is not connected")
