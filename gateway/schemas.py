"""What the gateway's HTTP API takes and gives (docs/spec.md §3): request models and one response
model per answer. Field order is the order of the keys the domain objects' ``to_public``
write, and numbers keep their type, so the JSON is the same as those dicts encoded
directly. The vehicle's own documents (its state, presence, diagnostics) are open
``dict[str, Any]``: the vehicle protocol (``protocol/models.py``) owns their shape.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.policy import MAX_ATTEMPTS_LIMIT
from protocol.models import FEATURE_RE, VIN_RE

ACTIVATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
VIN_PROBLEM = "a VIN is 17 characters of A-H J-N P R-Z 0-9 (ISO 3779)"

# ---------------------------------------------------------------- requests


class PolicyIn(BaseModel):
    """A per-request RetryPolicy; fields left out take the configured defaults."""

    model_config = ConfigDict(extra="forbid")
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS_LIMIT)
    initial_backoff_s: float | None = Field(default=None, ge=0, le=86_400)
    backoff_multiplier: float | None = Field(default=None, ge=1, le=100)
    max_backoff_s: float | None = Field(default=None, ge=0, le=7 * 86_400)
    jitter_ratio: float | None = Field(default=None, ge=0, lt=1)
    status_query_timeout_s: float | None = Field(default=None, gt=0, le=3600)
    ack_timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    ready_wait_s: float | None = Field(default=None, ge=0, le=7 * 86_400)
    outcome_wait_s: float | None = Field(default=None, ge=0, le=7 * 86_400)


class ActivationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    activation_id: str = Field(pattern=ACTIVATION_ID_PATTERN)
    vin: str
    feature: str
    action: Literal["activate", "deactivate"]
    policy: PolicyIn | None = None

    @field_validator("vin")
    @classmethod
    def _vin(cls, value: str) -> str:
        if not VIN_RE.match(value):
            raise ValueError(VIN_PROBLEM)
        return value

    @field_validator("feature")
    @classmethod
    def _feature(cls, value: str) -> str:
        if not FEATURE_RE.match(value):
            raise ValueError("a feature id is snake_case: [a-z][a-z0-9_]{0,63}")
        return value


# ---------------------------------------------------------------- answers


class Out(BaseModel):
    """An answer: exactly these keys, in this order."""

    model_config = ConfigDict(extra="forbid")


class Policy(Out):
    """The RetryPolicy the activation runs under (defaults merged with the request's)."""

    max_attempts: int
    initial_backoff_s: float
    backoff_multiplier: float
    max_backoff_s: float
    jitter_ratio: float
    status_query_timeout_s: float
    ack_timeout_s: float
    ready_wait_s: float
    outcome_wait_s: float


class Attempt(Out):
    n: int
    command_id: str | None
    at: str = Field(description="RFC 3339")
    vehicle_state: dict[str, Any] | None
    command_sent: bool
    response_code: str | None = Field(description="ack | nack | timeout | not_ready")
    response_message: str | None
    result: str | None


class Activation(Out):
    activation_id: str
    vin: str
    feature: str
    action: Literal["activate", "deactivate"]
    state: str = Field(examples=["SUCCEEDED"])
    failure_category: str | None
    attempts: list[Attempt]
    next_attempt_at: str | None
    policy: Policy
    diagnostics: dict[str, Any] | None = Field(description="the package of a failed activation")
    created_at: str
    updated_at: str
    origin: str = Field(examples=["api"])


class Rtt(Out):
    count: float
    mean_ms: float
    max_ms: float
    last_ms: float


class Twin(Out):
    """What the gateway last heard from a vehicle."""

    vin: str
    online: bool
    presence: dict[str, Any] | None
    state: dict[str, Any] | None
    last_seen: str | None
    fresh_at: str | None
    rtt: Rtt


class VehicleAnswer(Out):
    """The vehicle's answer to a live status or diagnostics query."""

    v: int
    command_id: str
    vin: str
    type: str | None
    status: Literal["ack", "nack"]
    reason: str | None
    retry_after_s: float | None
    state: dict[str, Any] | None
    diagnostics: dict[str, Any] | None
    at: str


class Health(Out):
    status: Literal["ok"]


class Ready(Out):
    ready: bool
    reason: Literal["broker_disconnected", "redis_unavailable", "twin_bootstrap_running"] | None = (
        Field(default=None, description="why not (null when ready)")
    )
