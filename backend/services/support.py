"""Technical support and the customer's exceptional events: manual activation and
permanent failure from a ticket, theft reports, maintenance-overdue warranty notices.

A support action is a named operator's: the ticket records who acted (``resolved_by``)
and the audit log gets a line, both in the action's own transaction. A manual
activation's ticket stays OPEN until the vehicle confirms (then ``resolution`` is
``manual_activation``); a permanent failure resolves it at once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.adapters.maintenance import MaintenanceStatus
from backend.domain.events import ManualActivationRequested, PermanentFailure
from backend.domain.machine import NOT_ACTIVATED, ON
from backend.domain.notices import render
from backend.domain.states import PurchaseState
from backend.errors import Conflict, NotFound
from backend.store.models import Customer, Purchase, Ticket, Vehicle
from backend.store.records import audit, queue_notice, resolve, timeline
from backend.store.unit_of_work import UnitOfWork
from backend.store.wakeups import NOTIFY
from protocol.timeutil import format_ts

PS = PurchaseState
# tickets about an activation that did not happen: support may activate by hand
ACTIVATION_TICKETS = ("activation_failed", "activation_deadline", "dispatch_rejected")


async def _actionable_ticket(work: UnitOfWork, ticket_id: str) -> tuple[Ticket, Purchase]:
    ticket = await work.session.scalar(
        select(Ticket).where(Ticket.id == ticket_id).with_for_update()
    )
    if ticket is None or ticket.purchase_id is None:
        raise NotFound("ticket", ticket_id)
    if ticket.status != "OPEN":
        raise Conflict("ticket_resolved", f"ticket {ticket.number} is {ticket.status}")
    if ticket.kind not in ACTIVATION_TICKETS:
        raise Conflict("not_an_activation_ticket", f"a {ticket.kind} ticket has no activation")
    purchase = await work.lock(ticket.purchase_id)
    assert purchase is not None
    if purchase.state not in NOT_ACTIVATED:
        raise Conflict("not_failed", f"purchase is {purchase.state}")
    return ticket, purchase


async def manual_activation(work: UnitOfWork, ticket_id: str, operator: str) -> dict[str, Any]:
    """Ask the gateway again under a new activation id (idempotent per ticket: a repeat
    changes nothing and is not audited again)."""
    ticket, purchase = await _actionable_ticket(work, ticket_id)
    decided = await work.decide(purchase, None, ManualActivationRequested())  # no money moves
    if decided.outcome == "applied":
        ticket.resolved_by = operator
        audit(
            work.session, operator, "manual_activation", ("ticket", ticket.id), work.now,
            ticket=ticket.number, purchase_id=purchase.id,
            support_activation_id=purchase.support_activation_id,
        )  # fmt: skip
    return {
        "ticket_id": ticket.id,
        "purchase_id": purchase.id,
        "support_activation_id": purchase.support_activation_id,
        "status": "REQUESTED",
    }


async def permanent_failure(work: UnitOfWork, ticket_id: str, operator: str) -> dict[str, Any]:
    """Close the ticket: every cent back (if any is still held or kept), apology offer."""
    ticket, purchase = await _actionable_ticket(work, ticket_id)
    resolve(ticket, "permanent_failure", work.now)
    work.resolved(ticket)  # counted in the metrics once the transaction commits
    ticket.resolved_by = operator
    payment = await work.payment_of(purchase.id)
    await work.decide(purchase, payment, PermanentFailure(ticket.number))
    audit(
        work.session, operator, "permanent_failure", ("ticket", ticket.id), work.now,
        ticket=ticket.number, purchase_id=purchase.id, offer=work.policy.apology_offer,
    )  # fmt: skip
    return {
        "ticket_id": ticket.id,
        "purchase_id": purchase.id,
        "status": "RESOLVED",
        "resolution_s": ticket.details["resolution_s"],
        "offer": work.policy.apology_offer,
    }


async def _locked_vehicle(session: AsyncSession, vehicle_id: str) -> Vehicle | None:
    return await session.get(Vehicle, vehicle_id, with_for_update=True, populate_existing=True)


async def theft_report(work: UnitOfWork, customer_id: str, vehicle_id: str) -> dict[str, Any]:
    """Record the theft; no money moves. Lists what the customer may cancel. The vehicle
    row is locked: two reports at once tell the customer once."""
    session, now = work.session, work.now
    vehicle = await _locked_vehicle(session, vehicle_id)
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
        or (p.duration_model == "subscription" and p.state in ON and p.cancel_reason is None)
    ]
    if first:
        customer = await session.get(Customer, customer_id)
        assert customer is not None
        msg = render("theft_report_received", vin=vehicle.vin, cancellable=len(cancellable))
        queue_notice(session, customer, msg, now, None, critical=True)
        work.wake(NOTIFY)
        timeline(session, customer_id, None, now, "vehicle.theft_report", vehicle_id=vehicle.id)
    return {
        "vehicle_id": vehicle.id,
        "reported_at": format_ts(vehicle.stolen_at or now),
        "refund": "none",
        "rule": "theft_no_automatic_refund",
        "cancellable_purchase_ids": cancellable,
    }


async def warranty_notice(work: UnitOfWork, vehicle_id: str, status: MaintenanceStatus) -> bool:
    """VSS says overdue: tell the customer once (warranty loss, restrictions). Nothing is
    deactivated: active services and the base platform stay on."""
    session, now = work.session, work.now
    vehicle = await _locked_vehicle(session, vehicle_id)
    if vehicle is None or not status.overdue or vehicle.warranty_notified_at is not None:
        return False
    vehicle.warranty_notified_at = now
    customer = await session.get(Customer, vehicle.customer_id)
    assert customer is not None
    msg = render("warranty_loss", vin=vehicle.vin, workshop=status.workshop_url)
    queue_notice(session, customer, msg, now, None)
    work.wake(NOTIFY)
    timeline(session, customer.id, None, now, "vehicle.maintenance_overdue", vin=vehicle.vin)
    return True
