"""Technical support and the customer's exceptional events: manual activation and
permanent failure from a ticket, theft reports, maintenance-overdue warranty notices."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.adapters.maintenance import MaintenanceStatus
from backend.domain.states import PaymentState, PurchaseState
from backend.errors import Conflict, NotFound
from backend.logs import log
from backend.services import lifecycle, saga
from backend.store.models import Customer, Purchase, Ticket, Vehicle
from backend.store.records import queue_gateway_request, timeline
from backend.workers import notify
from protocol.timeutil import format_ts

PS = PurchaseState
# tickets about an activation that did not happen: support may activate by hand
ACTIVATION_TICKETS = ("activation_failed", "activation_deadline", "dispatch_rejected")
NOT_ACTIVATED = (PS.FAILED_NO_CHARGE, PS.ESCALATED)


async def _open_ticket(session: AsyncSession, ticket_id: str) -> tuple[Ticket, Purchase]:
    ticket = await session.scalar(select(Ticket).where(Ticket.id == ticket_id).with_for_update())
    if ticket is None or ticket.purchase_id is None:
        raise NotFound("ticket", ticket_id)
    if ticket.status != "OPEN":
        raise Conflict("ticket_resolved", f"ticket {ticket.number} is {ticket.status}")
    if ticket.kind not in ACTIVATION_TICKETS:
        raise Conflict("not_an_activation_ticket", f"a {ticket.kind} ticket has no activation")
    purchase = await lifecycle.lock(session, ticket.purchase_id)
    assert purchase is not None
    if purchase.state not in NOT_ACTIVATED:
        raise Conflict("not_failed", f"purchase is {purchase.state}")
    return ticket, purchase


def resolve(ticket: Ticket, resolution: str, now: float) -> None:
    ticket.status, ticket.resolved_at = "RESOLVED", now
    ticket.details = {
        **ticket.details,
        "resolution": resolution,
        "resolution_s": round(now - ticket.created_at, 3),
    }
    log("ticket.resolved", ticket=ticket.number, resolution=resolution)


async def manual_activation(session: AsyncSession, ticket_id: str, now: float) -> dict[str, Any]:
    """Ask the gateway again under a new activation id (idempotent per ticket)."""
    ticket, purchase = await _open_ticket(session, ticket_id)
    if purchase.support_activation_id is None:
        purchase.support_activation_id = str(uuid.uuid4())
        queue_gateway_request(
            session, purchase, purchase.support_activation_id, "manual_activation.request",
            "activate", now, now,
        )  # fmt: skip
        timeline(session, purchase.customer_id, purchase.id, now, "support.manual_activation")
    return {
        "ticket_id": ticket.id,
        "purchase_id": purchase.id,
        "support_activation_id": purchase.support_activation_id,
        "status": "REQUESTED",
    }


async def on_support_event(
    session: AsyncSession, type_: str, data: dict[str, Any], now: float
) -> str:
    """The gateway's answer to a manual activation."""
    purchase = await session.scalar(
        select(Purchase).where(Purchase.support_activation_id == str(data.get("activation_id")))
    )
    if purchase is None:
        return "ignored"
    timeline(session, purchase.customer_id, purchase.id, now, f"support.{type_}")
    if type_ != "activation.succeeded" or purchase.state not in NOT_ACTIVATED:
        return "applied" if type_ != "activation.succeeded" else "stale"
    lifecycle.move(purchase, PS.MANUALLY_ACTIVATED, now)
    purchase.activated_at = now
    await lifecycle.on_activated(session, purchase, now, manual=True)
    tickets = (
        await session.scalars(
            select(Ticket).where(Ticket.purchase_id == purchase.id, Ticket.status == "OPEN")
        )
    ).all()
    number = ""
    for ticket in tickets:
        resolve(ticket, "manual_activation", now)
        number = ticket.number
    await lifecycle.tell(session, purchase, "manual_resolution_success", now, ticket=number)
    return "applied"


async def permanent_failure(session: AsyncSession, ticket_id: str, now: float) -> dict[str, Any]:
    """Close the ticket: every cent back (if any is still held or kept), apology offer."""
    ticket, purchase = await _open_ticket(session, ticket_id)
    await saga.release(session, purchase, PaymentState.FAILED_NO_CHARGE, now)
    resolve(ticket, "permanent_failure", now)
    offer = lifecycle.POLICY.apology_offer
    await lifecycle.tell(
        session, purchase, "permanent_failure", now, ticket=ticket.number, offer=offer
    )
    timeline(session, purchase.customer_id, purchase.id, now, "support.permanent_failure")
    return {
        "ticket_id": ticket.id,
        "purchase_id": purchase.id,
        "status": "RESOLVED",
        "resolution_s": ticket.details["resolution_s"],
        "offer": offer,
    }


async def theft_report(
    session: AsyncSession, customer_id: str, vehicle_id: str, now: float
) -> dict[str, Any]:
    """Record the theft; no money moves. Lists what the customer may cancel."""
    vehicle = await session.get(Vehicle, vehicle_id)
    if vehicle is None or vehicle.customer_id != customer_id:
        raise NotFound("vehicle", vehicle_id)
    first = vehicle.stolen_at is None
    if first:
        vehicle.stolen_at = now
    rows = await session.scalars(select(Purchase).where(Purchase.vehicle_id == vehicle.id))
    cancellable = [
        p.id
        for p in rows.all()
        if p.state == PS.SCHEDULED
        or (
            p.duration_model == "subscription"
            and p.state in lifecycle.ON
            and p.cancel_reason is None
        )
    ]
    if first:
        customer = await session.get(Customer, customer_id)
        assert customer is not None
        msg = notify.render("theft_report_received", vin=vehicle.vin, cancellable=len(cancellable))
        await notify.queue(session, customer, msg, now, None, critical=True)
        timeline(session, customer_id, None, now, "vehicle.theft_report", vehicle_id=vehicle.id)
    return {
        "vehicle_id": vehicle.id,
        "reported_at": format_ts(vehicle.stolen_at or now),
        "refund": "none",
        "rule": "theft_no_automatic_refund",
        "cancellable_purchase_ids": cancellable,
    }


async def warranty_notice(
    session: AsyncSession, vehicle: Vehicle, status: MaintenanceStatus, now: float
) -> bool:
    """VSS says overdue: tell the customer once (warranty loss, restrictions). Nothing is
    deactivated: active services and the base platform stay on."""
    if not status.overdue or vehicle.warranty_notified_at is not None:
        return False
    vehicle.warranty_notified_at = now
    customer = await session.get(Customer, vehicle.customer_id)
    assert customer is not None
    msg = notify.render("warranty_loss", vin=vehicle.vin, workshop=status.workshop_url)
    await notify.queue(session, customer, msg, now, None)
    timeline(session, customer.id, None, now, "vehicle.maintenance_overdue", vin=vehicle.vin)
    return True
