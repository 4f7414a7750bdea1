"""Subscriptions billed in arrears (mes vencido).

At each month end the completed month is charged. Proration (docs/lifecycle.md): the
days billed in month M are the UTC calendar days of M on which the service was
billable at some moment, from the day of ``billable_from`` (inclusive) to ``ends_at``
(a day is counted when any part of it is covered); amount = price for a full month,
else ``round_half_up(price × days / days_in_month)``. ``create_charges`` writes one
``subscription_charges`` row per (subscription, month) — unique in SQL, so a run that
happens twice charges once; ``ChargeExecutor`` then authorizes and captures it with
keys fixed by the charge id (``subauth:<id>``, ``subcap:<id>``).
"""

from __future__ import annotations

import calendar
import math
import re
import uuid
from datetime import UTC, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import InvalidRequest
from backend.store.models import Purchase, SubscriptionCharge
from backend.store.records import timeline

DAY_S = 86_400.0
MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
REQUESTED, CHARGED, FAILED = "REQUESTED", "CHARGED", "FAILED"


def month_bounds(month: str) -> tuple[float, float]:
    """[start, end) of a ``YYYY-MM`` month in UTC epoch seconds; 422 ``bad_month``."""
    m = MONTH_RE.match(month) if isinstance(month, str) else None
    if m is None or not 2000 <= int(m.group(1)) <= 2999:
        raise InvalidRequest("bad_month", "month must be YYYY-MM (2000..2999)")
    year, mon = int(m.group(1)), int(m.group(2))
    start = datetime(year, mon, 1, tzinfo=UTC).timestamp()
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC).timestamp()
    return start, end


def month_of(at: float) -> str:
    return f"{datetime.fromtimestamp(at, tz=UTC):%Y-%m}"


def next_month_start(at: float) -> float:
    return month_bounds(month_of(at))[1]


def previous_month(at: float) -> str:
    start, _ = month_bounds(month_of(at))
    return month_of(start - 1)


def days_in_month(month: str) -> int:
    start, _ = month_bounds(month)
    d = datetime.fromtimestamp(start, tz=UTC)
    return calendar.monthrange(d.year, d.month)[1]


def billable_days(billable_from: float, ends_at: float | None, month: str) -> int:
    """UTC calendar days of ``month`` touched by [billable_from, ends_at)."""
    start, end = month_bounds(month)
    frm = max(billable_from, start)
    to = min(ends_at if ends_at is not None else end, end)
    if to <= frm:
        return 0
    first_day = start + math.floor((frm - start) / DAY_S) * DAY_S
    return min(days_in_month(month), math.ceil((to - first_day) / DAY_S))


def prorate(price_cents: int, days: int, month_days: int) -> int:
    """Full price for a full month; else price × days / month_days, half up."""
    if days >= month_days:
        return price_cents
    return (2 * price_cents * days + month_days) // (2 * month_days)


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
