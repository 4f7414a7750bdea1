"""The handbook's six activation metrics, their thresholds and breakdowns, as pure
definitions (docs/operations.md says the same in words).

An activation is *finished* when the gateway's first terminal answer decided its
outcome (``purchases.activation_outcome``: succeeded | failed, at
``activation_finished_at``; ``machine.py`` records it once). Over the activations
finished inside a window:

* failure rate = failed / finished;
* first-attempt success = succeeded with one attempt / finished;
* average attempts to success = mean attempts over the successes;
* payment to activation = mean seconds from the payment (the hold or the charge, or a
  scheduled purchase's start, whichever is later) to the activation;
* permanent failure rate = purchases support closed as a permanent failure / finished;
* customer impact = failures after money had been taken (a direct debit) / finished.

SQL counts (``store/outcomes.py``); these functions turn the counts into the answer,
and bound the label values the Prometheus counters use (``backend/metrics.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from backend.errors import InvalidRequest


@dataclass(frozen=True)
class Definition:
    key: str
    name: str
    unit: str  # ratio | attempts | seconds
    threshold: float
    alert_when: str  # above | below the threshold

    def alerting(self, value: float | None) -> bool:
        if value is None:  # no sample: nothing to alert on
            return False
        return value > self.threshold if self.alert_when == "above" else value < self.threshold


HANDBOOK = (  # the handbook's order
    Definition("activation_failure_rate", "Activation failure rate", "ratio", 0.05, "above"),
    Definition("first_attempt_success_rate", "First-attempt success rate", "ratio", 0.95, "below"),
    Definition(
        "average_attempts_to_success", "Average attempts to success", "attempts", 2.0, "above"
    ),
    Definition(
        "payment_to_activation_seconds",
        "Time from payment to activation",
        "seconds",
        900.0,
        "above",
    ),
    Definition("permanent_failure_rate", "Permanent failure rate", "ratio", 0.01, "above"),
    Definition("customer_impact_rate", "Customer impact rate", "ratio", 0.005, "above"),
)


@dataclass(frozen=True)
class Tally:
    """What SQL counted over the activations finished inside a window."""

    finished: int = 0
    failed: int = 0
    first_attempt_successes: int = 0
    successes_with_attempts: int = 0  # successes whose attempt count is known
    attempts_of_successes: int = 0  # their attempts, summed
    timed_successes: int = 0  # successes whose payment time is known
    payment_to_activation_s: float = 0.0  # their waits, summed
    permanent_failures: int = 0
    customer_impact: int = 0


def ratio(count: float, total: int) -> float | None:
    return None if total == 0 else count / total


def measures(t: Tally) -> dict[str, tuple[float | None, int]]:
    """Each metric's (value, samples): None when there is no sample."""
    return {
        "activation_failure_rate": (ratio(t.failed, t.finished), t.finished),
        "first_attempt_success_rate": (ratio(t.first_attempt_successes, t.finished), t.finished),
        "average_attempts_to_success": (
            ratio(t.attempts_of_successes, t.successes_with_attempts),
            t.successes_with_attempts,
        ),
        "payment_to_activation_seconds": (
            ratio(t.payment_to_activation_s, t.timed_successes),
            t.timed_successes,
        ),
        "permanent_failure_rate": (ratio(t.permanent_failures, t.finished), t.finished),
        "customer_impact_rate": (ratio(t.customer_impact, t.finished), t.finished),
    }


def handbook(t: Tally) -> list[dict[str, Any]]:
    """The six metrics against their thresholds, in the handbook's order."""
    found = measures(t)
    out = []
    for d in HANDBOOK:
        value, samples = found[d.key]
        shown = None if value is None else round(value, 3 if d.unit == "seconds" else 4)
        out.append(
            {"key": d.key, "name": d.name, "unit": d.unit, "value": shown,
             "threshold": d.threshold, "alert_when": d.alert_when,
             "alerting": d.alerting(value), "samples": samples}
        )  # fmt: skip
    return out


# ---------------------------------------------------------------- the window
_WINDOW = re.compile(r"([0-9]{1,6})([mhd])")
_UNIT_S = {"m": 60, "h": 3_600, "d": 86_400}
MAX_WINDOW_S = 3_660 * 86_400  # ten years


def parse_window(text: str | None) -> int | None:
    """``24h`` → 86400 seconds; None (absent) → all time. Anything else is refused."""
    if text is None:
        return None
    found = _WINDOW.fullmatch(text)
    seconds = int(found[1]) * _UNIT_S[found[2]] if found else 0
    if not 0 < seconds <= MAX_WINDOW_S:
        raise InvalidRequest(
            "bad_window", "window must be <n>m, <n>h or <n>d, n at least 1, at most 10 years"
        )
    return seconds


# ---------------------------------------------------------------- bounded labels
# why an activation failed: the gateway's failure categories, and the backend's own
REASONS = frozenset(
    {
        "transient_connectivity",
        "vehicle_state",
        "configuration_conflict",
        "persistent_iot_failure",
        "timeout",
        "dispatch_rejected",  # the gateway refused the request (a 4xx)
        "deadline_exceeded",  # no final answer before the activation deadline
    }
)
ATTEMPT_LABELS = (*(str(n) for n in range(1, 10)), "10+")
HOURS = tuple(f"{h:02d}" for h in range(24))


def reason_label(category: str | None) -> str:
    return category if category in REASONS else "other"


def attempt_label(attempts: int) -> str:
    """ "1".."9", "10+" (attempts ≥ 1)."""
    return "10+" if attempts >= 10 else str(max(attempts, 1))


def hour_label(epoch_s: float) -> str:
    """The UTC hour of day, "00".."23" (Unix time has no leap seconds)."""
    return HOURS[int(epoch_s // 3_600) % 24]


# ---------------------------------------------------------------- breakdowns
def rows(
    counted: Iterable[tuple[str, int, int]], order: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Breakdown rows from (key, count, total) groups, the same key merged. ``order``:
    every one of these keys, in this order (absent ones with zeros); otherwise the
    keys found, the largest count first."""
    merged: dict[str, list[int]] = {key: [0, 0] for key in order or ()}
    for key, count, total in counted:
        slot = merged.setdefault(key, [0, 0])
        slot[0] += count
        slot[1] += total
    keys = list(order) if order is not None else sorted(merged, key=lambda k: (-merged[k][0], k))
    return [_row(key, *merged[key]) for key in keys]


def _row(key: str, count: int, total: int) -> dict[str, Any]:
    share = ratio(count, total)
    return {"key": key, "count": count, "total": total,
            "rate": None if share is None else round(share, 4)}  # fmt: skip


def by_attempt(counted: Iterable[tuple[int, int, int]]) -> list[dict[str, Any]]:
    """Successes by attempt number: (attempts, successes, finished) → rows "1".."10+"
    in that order, only those with a finished activation."""
    labelled = [(attempt_label(n), count, total) for n, count, total in counted if n >= 1]
    present = {label for label, _, total in labelled if total}
    return rows(labelled, [label for label in ATTEMPT_LABELS if label in present])


def nearest_rank(n: int, percent: float) -> int:
    """The 0-based position of the ``percent`` percentile among ``n`` sorted values
    (nearest rank: the smallest value with at least that share at or below it)."""
    return max(0, math.ceil(percent / 100 * n) - 1)
