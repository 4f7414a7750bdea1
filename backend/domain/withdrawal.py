"""Cancellation and withdrawal (desistimiento): which rule applies to a purchase at a
moment, and what it gives back. Pure; ``services/withdrawal.py`` applies it.

Rules (docs/lifecycle.md):
- scheduled, not started → hold released (or, paid by direct debit, refunded), nothing
  charged (``scheduled_not_started``);
- temporary shorter than 14 days → full refund at any time during the service
  (``withdrawal_short_service_any_time``);
- temporary of 14 days or more, and permanent → full refund within 14 days of
  activation (``withdrawal_within_14_days``), none after (``withdrawal_after_14_days``);
  the service is deactivated on request either way;
- subscription → ends at the end of the current month, which is still billed
  (``subscription_end_of_month``); after a theft report it ends now, billed up to today
  (``theft_subscription_immediate``);
- manually activated (never charged) → deactivated, nothing to refund (``nothing_charged``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from backend.domain.events import PurchaseView
from backend.domain.months import next_month_start
from backend.domain.states import PurchaseState
from backend.errors import Conflict
from protocol.timeutil import format_ts

PS = PurchaseState
WITHDRAWAL_DAYS = 14
DAY_S = 86_400.0
IN_PROGRESS = (PS.PAYMENT_PENDING, PS.ACTIVATION_QUEUED, PS.ACTIVATING)
ON = (PS.ACTIVE, PS.MANUALLY_ACTIVATED)


@dataclass(frozen=True)
class Decision:
    decision: str  # refund_full | no_refund | hold_released | ends_at_month_end | ends_now
    rule: str
    refund_cents: int
    effective_at: float

    def answer(self, purchase_id: str) -> dict[str, Any]:
        """What the API answers (the purchase's state is added once it is applied)."""
        out = asdict(self)
        out["effective_at"] = format_ts(self.effective_at)
        return {"purchase_id": purchase_id, **out}

    def in_words(self) -> str:
        return f"{self.decision} ({self.rule}), refund {self.refund_cents / 100:.2f} EUR"


def decide(purchase: PurchaseView, stolen: bool, now: float) -> Decision:
    """The rule for this purchase now; ``Conflict`` when it cannot be cancelled."""
    state = purchase.state
    kept = purchase.payment.kept_cents if purchase.payment is not None else 0
    if state is PS.SCHEDULED:
        if kept > 0:  # direct debit: taken at purchase, all of it goes back
            return Decision("refund_full", "scheduled_not_started", kept, now)
        return Decision("hold_released", "scheduled_not_started", 0, now)
    if state in IN_PROGRESS:
        raise Conflict("activation_in_progress", "the activation is running; retry when done")
    if state not in ON:
        raise Conflict("not_cancellable", f"a {state.value} purchase cannot be cancelled")
    if purchase.duration_model == "subscription":
        if stolen:
            return Decision("ends_now", "theft_subscription_immediate", 0, now)
        return Decision("ends_at_month_end", "subscription_end_of_month", 0, next_month_start(now))
    if state is PS.MANUALLY_ACTIVATED or kept == 0:
        return Decision("no_refund", "nothing_charged", 0, now)
    if purchase.duration_model == "temporary" and (purchase.duration_days or 0) < WITHDRAWAL_DAYS:
        return Decision("refund_full", "withdrawal_short_service_any_time", kept, now)
    since = now - (purchase.activated_at or now)
    if since <= WITHDRAWAL_DAYS * DAY_S:
        return Decision("refund_full", "withdrawal_within_14_days", kept, now)
    return Decision("no_refund", "withdrawal_after_14_days", 0, now)
