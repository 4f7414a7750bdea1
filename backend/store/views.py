"""Read models for the API: purchases, the expediente, tickets, metrics."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain import handbook
from backend.domain.catalog import CatalogEntry
from backend.domain.states import OpState
from backend.errors import NotFound
from backend.store import outcomes
from backend.store.catalog import version_column
from backend.store.gauges import counts_by
from backend.store.models import (
    MoneyOp,
    Notification,
    Payment,
    Purchase,
    SubscriptionCharge,
    Ticket,
    TimelineEntry,
    Vehicle,
)
from protocol.timeutil import format_ts


def ts(value: float | None) -> str | None:
    return format_ts(value) if value is not None else None


def purchase_view(purchase: Purchase, payment: Payment | None) -> dict[str, Any]:
    duration: dict[str, Any] = {"model": purchase.duration_model}
    if purchase.duration_days is not None:
        duration["days"] = purchase.duration_days
    return {
        "id": purchase.id,
        "vehicle_id": purchase.vehicle_id,
        "service_id": purchase.service_id,
        "duration": duration,
        "price_cents": purchase.price_cents,
        "currency": "EUR",
        "state": purchase.state,
        "activation_id": purchase.activation_id,
        "activation_state": purchase.activation_state,
        "failure_category": purchase.failure_category,
        "start_at": ts(purchase.start_at),
        "activation_deadline_at": ts(purchase.deadline_at),
        "activated_at": ts(purchase.activated_at),
        "expires_at": ts(purchase.expires_at),
        "ends_at": ts(purchase.ends_at),
        "cancel_reason": purchase.cancel_reason,
        "deactivation_state": purchase.deactivation_state,
        "created_at": ts(purchase.created_at),
        "updated_at": ts(purchase.updated_at),
        "payment": payment_view(payment) if payment else None,
    }


def payment_view(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "method": payment.method,
        "state": payment.state,
        "amount_cents": payment.amount_cents,
        "captured_cents": payment.captured_cents,
        "refunded_cents": payment.refunded_cents,
        "settlement": payment.settlement,
    }


async def purchase_of(
    session: AsyncSession, purchase_id: str, customer_id: str | None
) -> dict[str, Any]:
    purchase = await session.get(Purchase, purchase_id)
    if purchase is None or (customer_id is not None and purchase.customer_id != customer_id):
        raise NotFound("purchase", purchase_id)
    payment = await session.scalar(select(Payment).where(Payment.purchase_id == purchase.id))
    return purchase_view(purchase, payment)


def catalog_view(vehicle: Vehicle, entries: list[CatalogEntry]) -> dict[str, Any]:
    services = [
        {"id": e.id, "name": e.name, "description": e.description,
         "maintenance_linked": e.maintenance_linked,
         "prices": [{"model": p.model, "days": p.days, "price_cents": p.price_cents}
                    for p in e.prices]}
        for e in entries
    ]  # fmt: skip
    return {"vehicle_id": vehicle.id, "vin": vehicle.vin, "currency": "EUR", "services": services}


def notification_view(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "purchase_id": n.purchase_id,
        "template": n.template,
        "channel": n.channel,
        "subject": n.subject,
        "body": n.body,
        "critical": n.critical,
        "status": n.status,
        "created_at": ts(n.created_at),
        "sent_at": ts(n.sent_at),
    }


def ticket_view(t: Ticket) -> dict[str, Any]:
    return {
        "id": t.id,
        "number": t.number,
        "customer_id": t.customer_id,
        "purchase_id": t.purchase_id,
        "kind": t.kind,
        "status": t.status,
        "details": t.details,
        "created_at": ts(t.created_at),
        "resolved_at": ts(t.resolved_at),
        "resolution_s": (t.resolved_at - t.created_at) if t.resolved_at is not None else None,
        "resolution": t.resolution,
        "resolved_by": t.resolved_by,
    }


async def notifications(session: AsyncSession, customer_id: str) -> list[dict[str, Any]]:
    rows = await session.scalars(
        select(Notification)
        .where(Notification.customer_id == customer_id)
        .order_by(Notification.created_at)
    )
    return [notification_view(n) for n in rows.all()]


async def expediente(session: AsyncSession, customer_id: str) -> dict[str, Any]:
    pairs = (
        await session.execute(
            select(Purchase, Payment)
            .outerjoin(Payment, Payment.purchase_id == Purchase.id)
            .where(Purchase.customer_id == customer_id)
            .order_by(Purchase.created_at)
        )
    ).all()
    payment_ids = [p.id for _, p in pairs if p is not None]
    ops = (
        await session.scalars(
            select(MoneyOp).where(
                MoneyOp.payment_id.in_(payment_ids), MoneyOp.state == OpState.SUCCEEDED.value
            )
        )
    ).all()
    by_payment = {p.id: pur.id for pur, p in pairs if p is not None}
    money = [
        {
            "purchase_id": by_payment[o.payment_id],
            "amount_cents": o.amount_cents,
            "at": ts(o.completed_at),
            "provider_ref": o.provider_ref,
        }
        for o in ops
    ]
    subscription = (
        await session.scalars(
            select(SubscriptionCharge)
            .where(SubscriptionCharge.purchase_id.in_([pur.id for pur, _ in pairs]))
            .order_by(SubscriptionCharge.month)
        )
    ).all()
    tickets = await session.scalars(select(Ticket).where(Ticket.customer_id == customer_id))
    events = await session.scalars(
        select(TimelineEntry)
        .where(TimelineEntry.customer_id == customer_id)
        .order_by(TimelineEntry.at, TimelineEntry.id)
    )
    return {
        "customer_id": customer_id,
        "purchases": [purchase_view(pur, pay) for pur, pay in pairs],
        "charges": [m for m, o in zip(money, ops, strict=True) if o.kind == "capture"],
        "refunds": [m for m, o in zip(money, ops, strict=True) if o.kind == "refund"],
        "subscription_charges": [
            {
                "purchase_id": c.purchase_id,
                "month": c.month,
                "days_billed": c.days_billed,
                "amount_cents": c.amount_cents,
                "state": c.state,
                "at": ts(c.completed_at),
            }
            for c in subscription
        ],
        "notifications": await notifications(session, customer_id),
        "tickets": [ticket_view(t) for t in tickets.all()],
        "timeline": [
            {"at": ts(e.at), "purchase_id": e.purchase_id, "kind": e.kind, "detail": e.detail}
            for e in events.all()
        ],
    }


async def vehicle_and_catalog_version(
    session: AsyncSession, vehicle_id: str, customer_id: str
) -> tuple[Vehicle, int | None]:
    """The customer's vehicle (404 otherwise) and the stored catalog's version, in one
    query: the catalog shown for it is the current one in every process."""
    found = (
        await session.execute(
            select(Vehicle, version_column()).where(
                Vehicle.id == vehicle_id, Vehicle.customer_id == customer_id
            )
        )
    ).one_or_none()
    if found is None:
        raise NotFound("vehicle", vehicle_id)
    return found[0], found[1]


async def metrics_summary(
    session: AsyncSession, now: float, window_s: int | None = None
) -> dict[str, Any]:
    """Counts by state now (all time), then the handbook's six metrics against their
    thresholds and the breakdowns over the activations finished in the last
    ``window_s`` seconds (None: all time): ``store/outcomes.py``."""
    states = {state: n for state, n in await counts_by(session, Purchase.state)}
    pay = {state: n for state, n in await counts_by(session, Payment.state)}
    open_tickets = (
        await session.scalar(
            select(func.count()).select_from(Ticket).where(Ticket.status == "OPEN")
        )
        or 0
    )
    resolved = (
        await session.execute(
            select(func.avg(Ticket.resolved_at - Ticket.created_at), func.count()).where(
                Ticket.resolved_at.is_not(None)
            )
        )
    ).one()
    window = outcomes.Window(None if window_s is None else now - window_s, now)
    done = states.get("ACTIVE", 0) + states.get("FAILED_NO_CHARGE", 0) + states.get("ESCALATED", 0)
    failed = states.get("FAILED_NO_CHARGE", 0) + states.get("ESCALATED", 0)
    rate = failed / done if done else 0.0
    failure = handbook.HANDBOOK[0]  # the activation failure rate, all time (kept for old clients)
    return {
        "purchases_by_state": states,
        "payments_by_state": pay,
        "open_tickets": open_tickets,
        "tickets_resolved": resolved[1],
        "ticket_mean_resolution_s": round(float(resolved[0]), 3) if resolved[0] else None,
        "activation_failure_rate": {
            "value": round(rate, 4),
            "alert_above": failure.threshold,
            "alerting": failure.alerting(rate),
        },
        "window": {"from": ts(window.start), "to": ts(window.end), "seconds": window_s},
        **await outcomes.summary(session, window),
    }
