"""Wire schemas (docs/spec.md §2.1-§2.3), validated with pydantic at the edges.

Inside the services these become plain dicts/dataclasses; the models are the one
place that says what a valid message is.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from protocol.timeutil import parse_ts

VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # ISO 3779: no I, O, Q
VIN_RE = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")
FEATURE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"  # docs/spec.md §1: snake_case feature ids
FEATURE_RE = re.compile(FEATURE_PATTERN)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"  # command and activation ids
PROTOCOL_VERSION = 1
MAX_FUTURE_ISSUE_S = 30.0  # docs/spec.md §2.2 rule 4
# Bounds on what a vehicle may report (docs/protocol.md, "What the gateway accepts"):
# a vehicle's firmware ships a handful of features; anything past these is broken or
# hostile, and every name would otherwise become work (a deactivation) or a label.
MAX_FEATURES = 64
MAX_SEQ = 2**53 - 1  # exact in every JSON reader (and in Redis' Lua doubles)
MAX_TEXT = 64  # model, firmware, a DTC
MAX_RETRY_AFTER_S = 7 * 86_400


class CommandType(StrEnum):
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    STATUS = "status"
    DIAGNOSTICS = "diagnostics"


FEATURE_COMMANDS = frozenset({CommandType.ACTIVATE, CommandType.DEACTIVATE})


class ResponseStatus(StrEnum):
    ACK = "ack"
    NACK = "nack"


class NackReason(StrEnum):
    BUSY = "busy"
    DRIVING = "driving"
    POWERED_OFF = "powered_off"
    CONFLICT = "conflict"
    NOT_INSTALLED = "not_installed"
    MALFORMED = "malformed"
    WRONG_VEHICLE = "wrong_vehicle"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    INTERNAL_ERROR = "internal_error"


RETRYABLE_REASONS = frozenset(
    {NackReason.BUSY, NackReason.DRIVING, NackReason.POWERED_OFF, NackReason.INTERNAL_ERROR}
)
TERMINAL_REASONS = frozenset(
    {
        NackReason.CONFLICT,
        NackReason.NOT_INSTALLED,
        NackReason.BAD_SIGNATURE,
        NackReason.WRONG_VEHICLE,
        NackReason.MALFORMED,
    }
)
# NackReason.EXPIRED: retryable once with a fresh command, then terminal (docs/spec.md §2.3).


def _is_timestamp(value: str) -> str:
    parse_ts(value)
    return value


def _is_vin(value: str) -> str:
    if not VIN_RE.match(value):
        raise ValueError("a VIN is 17 characters of A-H J-N P R-Z 0-9")
    return value


Timestamp = Annotated[str, AfterValidator(_is_timestamp)]
Vin = Annotated[str, AfterValidator(_is_vin)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=128)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
FeatureName = Annotated[str, Field(pattern=FEATURE_PATTERN)]
FeatureList = Annotated[list[FeatureName], Field(max_length=MAX_FEATURES)]
# printable, no control characters: these end up in logs, tickets and e-mails
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, pattern=r"^[^\x00-\x1f\x7f]+$")]


class Command(BaseModel):
    """A signed command. Unknown extra fields are kept: the signature covers them."""

    model_config = ConfigDict(extra="allow", frozen=True)

    v: Literal[1]
    command_id: NonEmpty
    type: CommandType
    vin: str
    feature: str | None
    activation_id: str | None
    attempt: int = Field(ge=1)
    issued_at: Timestamp
    expires_at: Timestamp
    sig: str

    @model_validator(mode="after")
    def _feature_commands_name_a_feature(self) -> Command:
        if self.type in FEATURE_COMMANDS and (not self.feature or not self.activation_id):
            raise ValueError(f"{self.type.value} needs feature and activation_id")
        return self


class Modem(BaseModel):
    rssi_dbm: int = Field(ge=-200, le=0)


class Diagnostics(BaseModel):
    dtcs: list[Text] = Field(max_length=64)
    battery_v: float = Field(ge=0, le=1000)
    modem: Modem
    uptime_s: int = Field(ge=0, le=10**10)
    recent_errors: list[Annotated[str, Field(max_length=256)]] = Field(max_length=32)
    firmware: Text
    model: Text


class VehicleState(BaseModel):
    """What a vehicle says about itself. Bounded (``MAX_FEATURES``, ``MAX_SEQ``) and
    consistent (an active feature is an installed one), or refused whole."""

    vin: Vin
    model: Text
    firmware: Text
    online: bool
    power: Literal["off", "acc", "on"]
    moving: bool
    speed_kmh: float = Field(ge=0, le=1000)
    gear: Literal["P", "R", "N", "D"]
    busy: bool
    installed_features: FeatureList
    active_features: FeatureList
    seq: int = Field(ge=0, le=MAX_SEQ)
    at: Timestamp

    @model_validator(mode="after")
    def _active_features_are_installed(self) -> VehicleState:
        if not set(self.active_features) <= set(self.installed_features):
            raise ValueError("active_features lists a feature that is not installed")
        return self


class Response(BaseModel):
    v: Literal[1]
    command_id: Identifier
    vin: str
    type: CommandType | None
    status: ResponseStatus
    reason: NackReason | None
    retry_after_s: float | None = Field(ge=0, le=MAX_RETRY_AFTER_S)
    state: VehicleState | None
    diagnostics: Diagnostics | None
    at: Timestamp

    @model_validator(mode="after")
    def _nack_has_reason(self) -> Response:
        if (self.status is ResponseStatus.NACK) != (self.reason is not None):
            raise ValueError("a nack carries a reason and an ack none")
        return self


class Presence(BaseModel):
    vin: Vin
    online: bool
    at: Timestamp


def is_valid_vin(value: Any) -> bool:
    return isinstance(value, str) and VIN_RE.match(value) is not None
