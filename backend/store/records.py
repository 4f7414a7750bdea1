"""The rows a decision leaves behind, written in the caller's transaction: timeline
entries, support tickets, outbox rows that ask the gateway to act, notices for the
customer, scheduler jobs, and the audit log of what operators did. Writers only: who is
woken after the commit is the unit of work's business (``store/unit_of_work.py``)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain.notices import Message, channels_for
from backend.logs import log
from backend.store.db import on_postgresql
from backend.store.models import (
    Customer,
    Notification,
    OpsAction,
    OutboxMessage,
    Purchase,
    ScheduledJob,
    Ticket,
    TimelineEntry,
    Vehicle,
)

JOB_PENDING, JOB_DONE = "PENDING", "DONE"


def timeline(
    session: AsyncSession,
    customer_id: str,
    purchase_id: str | None,
    now: float,
    kind: str,
    **detail: Any,
) -> TimelineEntry:
    entry = TimelineEntry(
        customer_id=customer_id, purchase_id=purchase_id, at=now, kind=kind, detail=detail
    )
    session.add(entry)
    return entry


async def open_ticket(
    session: AsyncSession,
    purchase: Purchase,
    kind: str,
    diagnostics: dict[str, Any] | None,
    now: float,
    **extra: Any,
) -> Ticket:
    """One ticket per (purchase, kind): a duplicate event finds the existing one."""
    ticket, _ = await open_ticket_once(session, purchase, kind, diagnostics, now, **extra)
    return ticket


async def open_ticket_once(
    session: AsyncSession,
    purchase: Purchase,
    kind: str,
    diagnostics: dict[str, Any] | None,
    now: float,
    **extra: Any,
) -> tuple[Ticket, bool]:
    """``open_ticket``, and whether this call opened it (False: it existed)."""
    existing = await session.scalar(
        select(Ticket).where(Ticket.purchase_id == purchase.id, Ticket.kind == kind)
    )
    if existing is not None:
        return existing, False
    customer = await session.get(Customer, purchase.customer_id)
    vehicle = await session.get(Vehicle, purchase.vehicle_id)
    assert customer is not None
    assert vehicle is not None
    count = await session.scalar(select(func.count()).select_from(Ticket)) or 0
    ticket = Ticket(
        id=str(uuid.uuid4()), number=f"T-{count + 1:06d}-{uuid.uuid4().hex[:4].upper()}",
        customer_id=customer.id, purchase_id=purchase.id, kind=kind, status="OPEN",
        details={**_details(customer, vehicle, purchase), "diagnostics": diagnostics, **extra},
        created_at=now,
    )  # fmt: skip
    session.add(ticket)
    await session.flush()
    timeline(
        session,
        customer.id,
        purchase.id,
        now,
        "ticket.opened",
        ticket=ticket.number,
        ticket_kind=kind,
    )
    return ticket, True


def _details(customer: Customer, vehicle: Vehicle, purchase: Purchase) -> dict[str, Any]:
    """What support needs to act without looking anything up."""
    return {
        "customer": {"id": customer.id, "name": customer.name, "email": customer.email,
                     "phone": customer.phone},
        "vehicle": {"id": vehicle.id, "vin": vehicle.vin, "model": vehicle.model},
        "purchase": {"id": purchase.id, "service_id": purchase.service_id,
                     "activation_id": purchase.activation_id,
                     "failure_category": purchase.failure_category},
    }  # fmt: skip


def queue_gateway_request(
    session: AsyncSession,
    purchase: Purchase,
    activation_id: str,
    kind: str,
    action: str,
    available_at: float,
    now: float,
) -> None:
    """An outbox row asking the gateway to ``action`` this purchase's feature under
    ``activation_id``; the relay fills in the VIN when it sends it."""
    session.add(
        OutboxMessage(
            id=str(uuid.uuid4()),
            purchase_id=purchase.id,
            activation_id=activation_id,
            kind=kind,
            payload={
                "activation_id": activation_id,
                "vehicle_id": purchase.vehicle_id,
                "feature": purchase.service_id,
                "action": action,
            },
            available_at=available_at,
            attempts=0,
            dead=False,
            created_at=now,
        )
    )


def resolve(ticket: Ticket, resolution: str, now: float) -> None:
    ticket.status, ticket.resolved_at, ticket.resolution = "RESOLVED", now, resolution
    ticket.details = {
        **ticket.details,
        "resolution": resolution,
        "resolution_s": round(now - ticket.created_at, 3),
    }
    log("ticket.resolved", ticket=ticket.number, resolution=resolution)


def audit(
    session: AsyncSession,
    operator: str,
    action: str,
    target: tuple[str, str],
    now: float,
    **detail: Any,
) -> None:
    """One line of the audit log: ``operator`` did ``action`` to ``target`` (type, id)."""
    target_type, target_id = target
    session.add(
        OpsAction(
            id=str(uuid.uuid4()), at=now, operator=operator, action=action,
            target_type=target_type, target_id=target_id, detail=detail,
        )
    )  # fmt: skip
    log("ops.action", operator=operator, action=action, target=f"{target_type}:{target_id}")


async def schedule(
    session: AsyncSession,
    kind: str,
    key: str,
    due_at: float,
    now: float,
    purchase_id: str | None = None,
) -> None:
    """Add a scheduler job unless one with this key exists (the key is unique in SQL):
    one ``INSERT … ON CONFLICT (key) DO NOTHING``, where a look-up then an insert took
    two round trips (and a concurrent twin still failed the transaction)."""
    insert = postgresql_insert if on_postgresql(session) else sqlite_insert
    await session.execute(
        insert(ScheduledJob)
        .values(
            id=str(uuid.uuid4()),
            key=key,
            kind=kind,
            purchase_id=purchase_id,
            due_at=due_at,
            state=JOB_PENDING,
            attempts=0,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=[ScheduledJob.key])
    )


def queue_notice(
    session: AsyncSession,
    customer: Customer,
    msg: Message,
    now: float,
    purchase_id: str | None = None,
    critical: bool = False,
) -> None:
    """One QUEUED row per channel the rules pick for this customer."""
    for channel, address in channels_for(customer, critical):
        session.add(
            Notification(
                id=str(uuid.uuid4()),
                customer_id=customer.id,
                purchase_id=purchase_id,
                template=msg.template,
                channel=channel,
                address=address,
                subject=msg.subject,
                body=msg.body,
                critical=critical,
                status="QUEUED",
                created_at=now,
            )
        )
