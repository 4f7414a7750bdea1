"""Support tickets (ops): list them, activate by hand, or close as a permanent failure."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from backend.http.deps import BackendDep, Ops
from backend.http.errors import NOT_FOUND, OPS, conflict, errors
from backend.http.schemas import Id, ManualActivation, PermanentFailure, Ticket
from backend.services import support
from backend.store import models, views
from protocol.http_errors import INVALID

router = APIRouter(tags=["tickets"])

TICKET_CONFLICTS = conflict("ticket_resolved", "not_an_activation_ticket", "not_failed")
Status = Annotated[Literal["OPEN", "RESOLVED"] | None, Query()]


@router.get("/v1/ops/tickets", responses=errors(*OPS, INVALID))
async def tickets(_: Ops, backend: BackendDep, status: Status = None) -> list[Ticket]:
    """Every ticket, oldest first (``?status=OPEN`` or ``RESOLVED`` to filter)."""
    async with backend.sessions() as session:
        query = select(models.Ticket).order_by(models.Ticket.created_at)
        if status:
            query = query.where(models.Ticket.status == status)
        found = (await session.scalars(query)).all()
        return [Ticket.model_validate(views.ticket_view(t)) for t in found]


@router.post(
    "/v1/ops/tickets/{ticket_id}/manual-activation",
    status_code=202,
    responses=errors(*OPS, NOT_FOUND, TICKET_CONFLICTS, INVALID),
)
async def manual_activation(ticket_id: Id, _: Ops, backend: BackendDep) -> ManualActivation:
    """Ask the gateway again under a new activation id (idempotent per ticket)."""
    async with backend.units.begin() as work:
        answer = await support.manual_activation(work, ticket_id)
    await backend.relay.run_once()
    return ManualActivation.model_validate(answer)


@router.post(
    "/v1/ops/tickets/{ticket_id}/permanent-failure",
    responses=errors(*OPS, NOT_FOUND, TICKET_CONFLICTS, INVALID),
)
async def permanent_failure(ticket_id: Id, _: Ops, backend: BackendDep) -> PermanentFailure:
    """Close the ticket: every cent back (if any is still held or kept), apology offer."""
    async with backend.units.begin() as work:
        answer = await support.permanent_failure(work, ticket_id)
    await backend.settle()
    return PermanentFailure.model_validate(answer)
