"""The diagnostics package stored on a FAILED activation (docs/spec.md §3).

Pure: built from the activation's own log plus the answers of the final status and
diagnostics queries. Holds the attempt log, state snapshots, the IoT error responses,
feature, model and firmware, and the RTT statistics of this activation's commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protocol.timeutil import format_ts

if TYPE_CHECKING:
    from gateway.activation import Activation


def rtt_stats(rtts_ms: tuple[float, ...]) -> dict[str, float | int | None]:
    if not rtts_ms:
        return {"count": 0, "min_ms": None, "mean_ms": None, "max_ms": None}
    return {
        "count": len(rtts_ms),
        "min_ms": round(min(rtts_ms), 3),
        "mean_ms": round(sum(rtts_ms) / len(rtts_ms), 3),
        "max_ms": round(max(rtts_ms), 3),
    }


def build_package(
    act: Activation, diagnostics: dict[str, Any] | None, now: float, note: str | None = None
) -> dict[str, Any]:
    state = act.final_state or (act.snapshots[-1] if act.snapshots else None)
    diag = diagnostics or {}
    return {
        "activation_id": act.activation_id,
        "vin": act.vin,
        "feature": act.feature,
        "action": act.action.value,
        "failure_category": act.failure_category.value if act.failure_category else None,
        "model": diag.get("model") or (state or {}).get("model"),
        "firmware": diag.get("firmware") or (state or {}).get("firmware"),
        "attempts": act.to_public()["attempts"],
        "state_snapshots": list(act.snapshots),
        "final_status": act.final_state,
        "iot_errors": list(act.iot_errors),
        "vehicle_diagnostics": diagnostics,
        "rtt": rtt_stats(act.rtts_ms),
        "collected_at": format_ts(now),
        "note": note,
    }
