"""Vehicle twins: the gateway's last knowledge of each vehicle (docs/spec.md §2.3, §3).

Fed by the retained ``state`` and ``presence`` topics (shared subscriptions) and by
the state carried in every response, once ``intake`` has accepted them. Stored in
Redis (``store.update_twin``); this module is the pure part: readiness and freshness.

Readiness (docs/spec.md §3): online, parked (not moving, gear P), not busy. A twin is
*fresh* when the newest vehicle timestamp it holds is at most
``status_query_timeout_s`` old; before acting on a stale twin the machine asks the
vehicle with a live status query (once per attempt), so a state or presence message
lost with a crashed worker costs one round trip, not the activation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.activation import FailureCategory
from protocol.timeutil import format_ts, parse_ts


@dataclass(frozen=True, slots=True)
class Twin:
    vin: str
    state: dict[str, Any] | None
    presence: dict[str, Any] | None
    fresh_at: float  # newest vehicle timestamp seen (state/presence/response), epoch s
    seen_at: float  # when the gateway last heard from the vehicle
    response_at: float
    rev: int
    rtt: dict[str, float]

    @property
    def online(self) -> bool:
        """The newest word on it wins: presence, the ``online`` of a state, or an answer
        (a vehicle that answers is on line). A lost presence message is outvoted by
        the next state or response."""
        claims = [(self.response_at, True)] if self.response_at else []
        if self.presence is not None:
            claims.append((_ts(self.presence.get("at")), bool(self.presence.get("online"))))
        if self.state is not None:
            claims.append((_ts(self.state.get("at")), bool(self.state.get("online"))))
        return max(claims)[1] if claims else False

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.fresh_at)

    @classmethod
    def from_hash(cls, vin: str, raw: dict[str, str]) -> Twin | None:
        if not raw or ("state" not in raw and "presence" not in raw and "response_ms" not in raw):
            return None
        count = float(raw.get("rtt_count", 0))
        rtt = {
            "count": count,
            "mean_ms": float(raw.get("rtt_sum_ms", 0)) / count if count else 0.0,
            "max_ms": float(raw.get("rtt_max_ms", 0)),
            "last_ms": float(raw.get("rtt_last_ms", 0)),
        }
        return cls(
            vin=vin,
            state=json.loads(raw["state"]) if raw.get("state") else None,
            presence=json.loads(raw["presence"]) if raw.get("presence") else None,
            fresh_at=int(raw.get("fresh_ms", 0)) / 1000,
            seen_at=int(raw.get("seen_ms", 0)) / 1000,
            response_at=int(raw.get("response_ms", 0)) / 1000,
            rev=int(raw.get("rev", 0)),
            rtt=rtt,
        )

    def to_public(self) -> dict[str, Any]:
        return {
            "vin": self.vin,
            "online": self.online,
            "presence": self.presence,
            "state": self.state,
            "last_seen": format_ts(self.seen_at) if self.seen_at else None,
            "fresh_at": format_ts(self.fresh_at) if self.fresh_at else None,
            "rtt": self.rtt,
        }


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    why: str = ""
    category: FailureCategory | None = None


def readiness(twin: Twin | None) -> Readiness:
    """Whether the twin says a feature command can be carried out now."""
    if twin is None or (twin.state is None and twin.presence is None):
        return Readiness(False, "no state known", FailureCategory.TRANSIENT_CONNECTIVITY)
    if not twin.online:
        return Readiness(False, "offline", FailureCategory.TRANSIENT_CONNECTIVITY)
    state = twin.state
    if state is None:
        return Readiness(False, "no state known", FailureCategory.TRANSIENT_CONNECTIVITY)
    if state.get("moving") or state.get("gear", "P") != "P":
        return Readiness(False, "driving", FailureCategory.VEHICLE_STATE)
    if state.get("busy"):
        return Readiness(False, "busy", FailureCategory.VEHICLE_STATE)
    return Readiness(True)


def feature_active(state: dict[str, Any] | None, feature: str) -> bool | None:
    """Whether ``state`` lists ``feature`` as active; None without a state."""
    if not state:
        return None
    return feature in state.get("active_features", [])


def _ts(value: Any) -> float:
    try:
        return parse_ts(value)
    except (ValueError, TypeError):
        return 0.0
