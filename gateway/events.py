"""What goes into the activation machine (events) and what comes out (effects).

Events carry a ``VehicleView``: the twin and the holder of the vehicle's command slot
as they were when the activation was loaded; the store only commits a step if both
are still the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.activation import Activation
from gateway.twin import Twin
from protocol.models import CommandType


@dataclass(frozen=True, slots=True)
class VehicleView:
    twin: Twin | None = None
    lock_holder: str | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    view: VehicleView = field(default_factory=VehicleView)


@dataclass(frozen=True, slots=True)
class Reply:
    command_id: str
    status: str  # ack | nack
    reason: str | None = None
    retry_after_s: float | None = None
    state: dict[str, Any] | None = None
    diagnostics: dict[str, Any] | None = None
    rtt_s: float | None = None
    view: VehicleView = field(default_factory=VehicleView)


@dataclass(frozen=True, slots=True)
class Cancel:
    view: VehicleView = field(default_factory=VehicleView)


Event = Tick | Reply | Cancel


@dataclass(frozen=True, slots=True)
class Send:
    command_id: str
    type: CommandType
    attempt: int
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Emit:
    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Step:
    activation: Activation
    sends: tuple[Send, ...] = ()
    events: tuple[Emit, ...] = ()
    changed: bool = False
