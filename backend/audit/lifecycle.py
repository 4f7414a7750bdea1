"""Issue 5 invariants: never billed past the end of a service, one charge per
subscription month (never more days than were active), refunds never above captures,
ended services switched off, nothing left on past its end."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.audit.types import Violation
from backend.domain.months import billable_days
from backend.domain.states import OpKind, OpState, PurchaseState
from backend.store.models import MoneyOp, Payment, Purchase, SubscriptionCharge

ON = (PurchaseState.ACTIVE.value, PurchaseState.MANUALLY_ACTIVATED.value)
ENDED = (
    PurchaseState.EXPIRED.value,
    PurchaseState.DEACTIVATED.value,
    PurchaseState.CANCELLED.value,
)
SCHEDULER_LAG_S = 3600.0


async def check(
    session: AsyncSession, now: float, lag_s: float = SCHEDULER_LAG_S
) -> list[Violation]:
    out: list[Violation] = []
    purchases = {p.id: p for p in (await session.scalars(select(Purchase))).all()}
    for p in purchases.values():
        out.extend(_purchase_rules(p, now, lag_s))
    for c in (await session.scalars(select(SubscriptionCharge))).all():
        out.extend(_charge_rules(c, purchases[c.purchase_id]))
    dup = await session.execute(
        select(SubscriptionCharge.purchase_id, SubscriptionCharge.month, func.count())
        .group_by(SubscriptionCharge.purchase_id, SubscriptionCharge.month)
        .having(func.count() > 1)
    )
    out.extend(Violation("one_charge_per_month", f"{pid}:{m}", str(n)) for pid, m, n in dup.all())
    over = await session.scalars(
        select(Payment).where(Payment.refunded_cents > Payment.captured_cents)
    )
    out.extend(Violation("refund_le_capture", p.id, str(p.refunded_cents)) for p in over.all())
    late = await session.execute(
        select(Purchase.id, MoneyOp.created_at)
        .join(Payment, Payment.purchase_id == Purchase.id)
        .join(MoneyOp, MoneyOp.payment_id == Payment.id)
        .where(
            MoneyOp.kind == OpKind.CAPTURE.value,
            MoneyOp.state != OpState.FAILED.value,
            Purchase.expires_at.is_not(None),
            MoneyOp.created_at > Purchase.expires_at,
        )
    )
    out.extend(Violation("billed_past_expiry", pid, f"capture at {at}") for pid, at in late.all())
    return out


def _purchase_rules(p: Purchase, now: float, lag_s: float) -> list[Violation]:
    out = []
    end = p.expires_at if p.expires_at is not None else p.ends_at
    if p.state in ON and end is not None and end < now - lag_s:
        out.append(Violation("on_past_its_end", p.id, p.state))
    if p.state in ENDED and p.activated_at is not None and p.deactivation_id is None:
        out.append(Violation("ended_not_deactivated", p.id, p.state))
    return out


def _charge_rules(c: SubscriptionCharge, p: Purchase) -> list[Violation]:
    if p.billable_from is None:
        return [Violation("charge_without_activation", c.id, p.state)]
    allowed = billable_days(p.billable_from, p.ends_at, c.month)
    if c.days_billed > allowed:
        return [Violation("billed_past_end", c.id, f"{c.days_billed} days > {allowed}")]
    if c.amount_cents > p.price_cents:
        return [Violation("charge_exceeds_price", c.id, str(c.amount_cents))]
    return []
