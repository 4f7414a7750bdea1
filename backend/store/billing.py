"""Subscriptions billed in arrears (mes vencido).

At each month end the completed month is charged, prorated (``domain/months.py``).
``create_charges`` writes one
``subscription_charges`` row per (subscription, month) — unique in SQL, so a run that
happens twice charges once; ``ChargeExecutor`` then authorizes and captures it with
keys fixed by the charge id (``subauth:<id>``, ``subcap:<id>``).
"""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain.months import billable_days, days_in_month, month_bounds, prorate
from backend.errors import InvalidRequest
from backend.store.models import Purchase, SubscriptionCharge
from backend.store.records import timeline

REQUESTED, CHARGED, FAILED = "REQUESTED", "CHARGED", "FAILED"


async def create_charges(session: AsyncSession, month: str, now: float) -> tuple[int, int]:
    """Write the month's charges; returns (created, already there). 422 before month end."""
    start, end = month_bounds(month)
    if end > now:
        raise InvalidRequest("month_not_complete", f"{month} ends at {end:.0f}; bill it after")
    subs = (
        await session.scalars(
            select(Purchase).where(
                Purchase.duration_model == "subscription",
                Purchase.billable_from.is_not(None),
                Purchase.billable_from < end,
                or_(Purchase.ends_at.is_(None), Purchase.ends_at > start),
            )
        )
    ).all()
    billed = set(
        (
            await session.scalars(
                select(SubscriptionCharge.purchase_id).where(SubscriptionCharge.month == month)
            )
        ).all()
    )
    created = 0
    for sub in subs:
        if sub.id in billed:
            continue
        assert sub.billable_from is not None
        days = billable_days(sub.billable_from, sub.ends_at, month)
        if days == 0:
            continue
        created += 1
        _add_charge(session, sub, month, days, now)
    await session.flush()
    return created, len(billed)


def _add_charge(session: AsyncSession, sub: Purchase, month: str, days: int, now: float) -> None:
    dim = days_in_month(month)
    amount = prorate(sub.price_cents, days, dim)
    session.add(
        SubscriptionCharge(
            id=str(uuid.uuid4()), purchase_id=sub.id, month=month, days_billed=days,
            days_in_month=dim, amount_cents=amount, state=REQUESTED, attempts=0,
            next_attempt_at=now, created_at=now,
        )
    )  # fmt: skip
    timeline(
        session, sub.customer_id, sub.id, now, "subscription.charge_requested",
        month=month, days=days, amount_cents=amount,
    )  # fmt: skip


async def charges_of_month(session: AsyncSession, month: str) -> list[SubscriptionCharge]:
    return list(
        (
            await session.scalars(
                select(SubscriptionCharge)
                .where(SubscriptionCharge.month == month)
                .order_by(SubscriptionCharge.created_at, SubscriptionCharge.id)
            )
        ).all()
    )


def charge_view(c: SubscriptionCharge) -> dict[str, object]:
    return {
        "id": c.id,
        "purchase_id": c.purchase_id,
        "month": c.month,
        "days_billed": c.days_billed,
        "days_in_month": c.days_in_month,
        "amount_cents": c.amount_cents,
        "state": c.state,
    }


async def record(
    session: AsyncSession, charge_id: str, state: str, now: float, **values: object
) -> bool:
    """Guarded: only a REQUESTED charge is finished, once."""
    done = await session.execute(
        update(SubscriptionCharge)
        .where(SubscriptionCharge.id == charge_id, SubscriptionCharge.state == REQUESTED)
        .values(state=state, completed_at=now, **values)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]
