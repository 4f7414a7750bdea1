"""Read models for operations: the filtered, paginated lists (tickets, purchases,
customers, the audit log), one ticket, the fleet's models and firmware. Every list is a
filtered query handed to ``pages.fetch_page``; the views shape the rows."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import NotFound
from backend.store import views
from backend.store.models import Customer, OpsAction, Payment, Purchase, Ticket, Vehicle
from backend.store.pages import AnySelect, Page, PageRequest, fetch_page


@dataclass(frozen=True)
class TicketFilter:
    status: str | None = None
    kind: str | None = None
    customer_id: str | None = None
    purchase_id: str | None = None


@dataclass(frozen=True)
class PurchaseFilter:
    state: str | None = None
    service_id: str | None = None
    model: str | None = None  # the vehicle's model
    customer_id: str | None = None
    vehicle_id: str | None = None
    failure_category: str | None = None


def _where(query: AnySelect, pairs: list[tuple[Any, str | None]]) -> AnySelect:
    """``column == value`` for every filter given (None: not filtered)."""
    for column, value in pairs:
        if value is not None:
            query = query.where(column == value)
    return query


async def tickets(
    session: AsyncSession, f: TicketFilter, page: PageRequest
) -> tuple[list[dict[str, Any]], Page]:
    query = _where(
        select(Ticket),
        [
            (Ticket.status, f.status),
            (Ticket.kind, f.kind),
            (Ticket.customer_id, f.customer_id),
            (Ticket.purchase_id, f.purchase_id),
        ],
    )
    found = await fetch_page(session, query, Ticket.created_at, Ticket.id, page)
    return [views.ticket_view(row[0]) for row in found.rows], found


async def ticket(session: AsyncSession, ticket_id: str) -> dict[str, Any]:
    found = await session.get(Ticket, ticket_id)
    if found is None:
        raise NotFound("ticket", ticket_id)
    return views.ticket_view(found)


async def purchases(
    session: AsyncSession, f: PurchaseFilter, page: PageRequest
) -> tuple[list[dict[str, Any]], Page]:
    query = _where(
        select(Purchase, Payment, Vehicle.model)
        .join(Vehicle, Vehicle.id == Purchase.vehicle_id)
        .outerjoin(Payment, Payment.purchase_id == Purchase.id),
        [
            (Purchase.state, f.state),
            (Purchase.service_id, f.service_id),
            (Vehicle.model, f.model),
            (Purchase.customer_id, f.customer_id),
            (Purchase.vehicle_id, f.vehicle_id),
            (Purchase.failure_category, f.failure_category),
        ],
    )
    found = await fetch_page(session, query, Purchase.created_at, Purchase.id, page)
    rows = [
        {
            **views.purchase_view(purchase, payment),
            "customer_id": purchase.customer_id,
            "vehicle_model": model,
        }
        for purchase, payment, model, *_ in found.rows
    ]
    return rows, found


async def customers(
    session: AsyncSession, q: str | None, page: PageRequest
) -> tuple[list[dict[str, Any]], Page]:
    """``q``: a case-insensitive substring of the name or the e-mail (``%`` and ``_``
    are plain characters)."""
    owned = (
        select(func.count(Vehicle.id)).where(Vehicle.customer_id == Customer.id).scalar_subquery()
    )
    query = select(Customer, owned)
    if q:
        needle = q.lower()
        query = query.where(
            or_(
                func.lower(Customer.name).contains(needle, autoescape=True),
                func.lower(Customer.email).contains(needle, autoescape=True),
            )
        )
    found = await fetch_page(session, query, Customer.created_at, Customer.id, page)
    rows = [
        {
            "id": c.id,
            "name": c.name,
            "email": c.email,
            "payment_method": c.payment_method,
            "vehicles": vehicles,
        }
        for c, vehicles, *_ in found.rows
    ]
    return rows, found


async def expediente(session: AsyncSession, customer_id: str) -> dict[str, Any]:
    """Any customer's purchase file (the same as their own ``/me/expediente``)."""
    if await session.get(Customer, customer_id) is None:
        raise NotFound("customer", customer_id)
    return await views.expediente(session, customer_id)


async def audit_log(
    session: AsyncSession, operator: str | None, action: str | None, page: PageRequest
) -> tuple[list[dict[str, Any]], Page]:
    query = _where(select(OpsAction), [(OpsAction.operator, operator), (OpsAction.action, action)])
    found = await fetch_page(session, query, OpsAction.at, OpsAction.id, page)
    rows = [
        {
            "id": a.id,
            "at": views.ts(a.at),
            "operator": a.operator,
            "action": a.action,
            "target_type": a.target_type,
            "target_id": a.target_id,
            "detail": a.detail,
        }
        for a, *_ in found.rows
    ]
    return rows, found


async def fleet_models(session: AsyncSession) -> list[dict[str, Any]]:
    """Every vehicle model on record, the firmware versions seen on it, how many
    vehicles (a vehicle seeded without firmware counts, adds no version)."""
    rows = await session.execute(
        select(Vehicle.model, Vehicle.firmware, func.count())
        .group_by(Vehicle.model, Vehicle.firmware)
        .order_by(Vehicle.model)
    )
    firmware: dict[str, set[str]] = defaultdict(set)
    vehicles: dict[str, int] = defaultdict(int)
    for model, version, count in rows:
        vehicles[model] += count
        if version is not None:
            firmware[model].add(version)
    return [
        {"model": m, "firmware": sorted(firmware[m]), "vehicles": n} for m, n in vehicles.items()
    ]
