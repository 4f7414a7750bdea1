"""Cancellation and withdrawal (desistimiento): ``POST /v1/purchases/{id}/cancel``.

``decide`` is pure: the rule that applies to a purchase at a moment, with the refund.
``cancel`` applies it in one transaction (purchase row locked) and answers the same
decision again on a repeated request, so a retried cancel never moves money twice.

Rules (docs/lifecycle.md):
- scheduled, not started → hold released, nothing charged (``scheduled_not_started``);
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

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain.states import OpKind, OpState, PaymentState, PurchaseState
from backend.errors import Conflict, NotFound
from backend.services import billing, lifecycle, saga
from backend.store.models import MoneyOp, OutboxMessage, Payment, Purchase, TimelineEntry, Vehicle
from backend.store.records import timeline
from backend.workers import money
from backend.workers.scheduler import schedule
from protocol.timeutil import format_ts

PS = PurchaseState
WITHDRAWAL_DAYS = 14
DAY_S = 86_400.0
IN_PROGRESS = (PS.PAYMENT_PENDING, PS.ACTIVATION_QUEUED, PS.ACTIVATING)


@dataclass(frozen=True)
class Decision:
    decision: str  # refund_full | no_refund | hold_released | ends_at_month_end | ends_now
    rule: str
    refund_cents: int
    effective_at: float

    def view(self, purchase: Purchase) -> dict[str, Any]:
        out = asdict(self)
        out["effective_at"] = format_ts(self.effective_at)
        return {"purchase_id": purchase.id, "state": purchase.state, **out}


def kept(payment: Payment | None) -> int:
    return 0 if payment is None else payment.captured_cents - payment.refunded_cents


def decide(purchase: Purchase, payment: Payment | None, stolen: bool, now: float) -> Decision:
    """The rule for this purchase now; ``Conflict`` when it cannot be cancelled."""
    state = PS(purchase.state)
    if state is PS.SCHEDULED:
        return Decision("hold_released", "scheduled_not_started", 0, now)
    if state in IN_PROGRESS:
        raise Conflict("activation_in_progress", "the activation is running; retry when done")
    if state not in lifecycle.ON:
        raise Conflict("not_cancellable", f"a {state.value} purchase cannot be cancelled")
    if purchase.duration_model == "subscription":
        if stolen:
            return Decision("ends_now", "theft_subscription_immediate", 0, now)
        return Decision(
            "ends_at_month_end", "subscription_end_of_month", 0, billing.next_month_start(now)
        )
    if state is PS.MANUALLY_ACTIVATED or kept(payment) == 0:
        return Decision("no_refund", "nothing_charged", 0, now)
    if purchase.duration_model == "temporary" and (purchase.duration_days or 0) < WITHDRAWAL_DAYS:
        return Decision("refund_full", "withdrawal_short_service_any_time", kept(payment), now)
    since = now - (purchase.activated_at or now)
    if since <= WITHDRAWAL_DAYS * DAY_S:
        return Decision("refund_full", "withdrawal_within_14_days", kept(payment), now)
    return Decision("no_refund", "withdrawal_after_14_days", 0, now)


async def cancel(
    session: AsyncSession, customer_id: str, purchase_id: str, now: float
) -> dict[str, Any]:
    purchase = await lifecycle.lock(session, purchase_id)
    if purchase is None or purchase.customer_id != customer_id:
        raise NotFound("purchase", purchase_id)
    previous = await _previous(session, purchase)
    if previous is not None:
        return previous
    payment = await saga.payment_of(session, purchase)
    upfront = purchase.duration_model != "subscription"  # subscriptions: no money moves here
    if upfront and payment is not None and await _capture_running(session, payment):
        raise Conflict("payment_in_progress", "the charge is being recorded; retry shortly")
    vehicle = await session.get(Vehicle, purchase.vehicle_id)
    stolen = vehicle is not None and vehicle.stolen_at is not None
    decision = decide(purchase, payment, stolen, now)
    await _apply(session, purchase, payment, decision, stolen, now)
    answer = decision.view(purchase)
    timeline(session, purchase.customer_id, purchase.id, now, "purchase.cancel", answer=answer)
    outcome = f"{decision.decision} ({decision.rule}), refund {decision.refund_cents / 100:.2f} EUR"
    await lifecycle.tell(session, purchase, "cancellation_confirmed", now, outcome=outcome)
    return answer


async def _previous(session: AsyncSession, purchase: Purchase) -> dict[str, Any] | None:
    """The answer given to an earlier cancel of this purchase (idempotent replay)."""
    if purchase.cancel_reason not in lifecycle.CUSTOMER_REASONS:
        return None
    entry = await session.scalar(
        select(TimelineEntry)
        .where(TimelineEntry.purchase_id == purchase.id, TimelineEntry.kind == "purchase.cancel")
        .order_by(TimelineEntry.id.desc())
        .limit(1)
    )
    if entry is None:
        return None
    return {**entry.detail["answer"], "state": purchase.state}


async def _capture_running(session: AsyncSession, payment: Payment) -> bool:
    op = await session.scalar(
        select(MoneyOp).where(
            MoneyOp.payment_id == payment.id,
            MoneyOp.kind.in_([OpKind.CAPTURE.value, OpKind.CANCEL.value]),
            MoneyOp.state == OpState.REQUESTED.value,
        )
    )
    return op is not None


async def _apply(
    session: AsyncSession,
    purchase: Purchase,
    payment: Payment | None,
    d: Decision,
    stolen: bool,
    now: float,
) -> None:
    purchase.cancelled_at = now
    purchase.cancel_reason = "customer_withdrawal"
    if d.rule == "scheduled_not_started":
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.purchase_id == purchase.id, OutboxMessage.delivered_at.is_(None))
            .values(dead=True)
        )
        lifecycle.move(purchase, PS.CANCELLED, now)
        await saga.release(session, purchase, PaymentState.CANCELLED, now)
        return
    if purchase.duration_model == "subscription":
        purchase.cancel_reason = "customer_theft_cancel" if stolen else "customer_cancel"
        purchase.ends_at = d.effective_at
        if d.effective_at <= now:
            await lifecycle.end_service(
                session, purchase, PS.CANCELLED, purchase.cancel_reason, now
            )
        else:
            key = f"subscription_end:{purchase.id}"
            await schedule(session, "subscription_end", key, d.effective_at, now, purchase.id)
        return
    if d.refund_cents > 0 and payment is not None:
        await money.request(
            session, payment, OpKind.REFUND, d.refund_cents, PaymentState.REFUNDED, now
        )
    await lifecycle.end_service(session, purchase, PS.CANCELLED, purchase.cancel_reason, now)
