"""``POST /v1/purchases/{id}/cancel``: the withdrawal rules (``domain/withdrawal.py``)
applied in one transaction, the purchase row locked. A repeated request answers the
first decision again, so a retried cancel never moves money twice."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain import withdrawal
from backend.domain.events import CustomerCancel
from backend.domain.states import CUSTOMER_REASONS, OpKind, OpState
from backend.errors import Conflict, NotFound
from backend.store.models import MoneyOp, Payment, Purchase, TimelineEntry, Vehicle
from backend.store.unit_of_work import UnitOfWork, view_of


async def cancel(work: UnitOfWork, customer_id: str, purchase_id: str) -> dict[str, Any]:
    purchase = await work.lock(purchase_id)
    if purchase is None or purchase.customer_id != customer_id:
        raise NotFound("purchase", purchase_id)
    previous = await _previous(work.session, purchase)
    if previous is not None:
        return previous
    payment = await work.payment_of(purchase.id)
    upfront = purchase.duration_model != "subscription"  # subscriptions: no money moves here
    if upfront and payment is not None and await _capture_running(work.session, payment):
        raise Conflict("payment_in_progress", "the charge is being recorded; retry shortly")
    vehicle = await work.session.get(Vehicle, purchase.vehicle_id)
    stolen = vehicle is not None and vehicle.stolen_at is not None
    decision = withdrawal.decide(view_of(purchase, payment), stolen, work.now)
    answer = decision.answer(purchase.id)
    event = CustomerCancel(
        decision.rule, decision.refund_cents, decision.effective_at, stolen, answer,
        decision.in_words(),
    )  # fmt: skip
    await work.decide(purchase, payment, event)
    return {**answer, "state": purchase.state}


async def _previous(session: AsyncSession, purchase: Purchase) -> dict[str, Any] | None:
    """The answer given to an earlier cancel of this purchase (idempotent replay)."""
    if purchase.cancel_reason not in CUSTOMER_REASONS:
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
