"""Wire schemas (SPEC §2.1-§2.3), validated with pydantic at the edges.

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
FEATURE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
PROTOCOL_VERSION = 1
MAX_FUTURE_ISSUE_S = 30.0  # SPEC §2.2 rule 4


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
# NackReason.EXPIRED: retryable once with a fresh command, then terminal (SPEC §2.3).


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
    rssi_dbm: int


class Diagnostics(BaseModel):
    dtcs: list[str]
    battery_v: float
    modem: Modem
    uptime_s: int
    recent_errors: list[str]
    firmware: str
    model: str


class VehicleState(BaseModel):
    vin: Vin
    model: str
    firmware: str
    online: bool
    power: Literal["off", "acc", "on"]
    moving: bool
    speed_kmh: float = Field(ge=0)
    gear: Literal["P", "R", "N", "D"]
    busy: bool
    installed_features: list[str]
    active_features: list[str]
    seq: int = Field(ge=0)
    at: Timestamp


class Response(BaseModel):
    v: Literal[1]
    command_id: NonEmpty
    vin: str
    type: CommandType | None
    status: ResponseStatus
    reason: NackReason | None
    retry_after_s: float | None
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
