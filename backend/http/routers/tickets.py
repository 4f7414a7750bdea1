"""Support tickets (ops): list them (filtered, paginated), read one, activate by hand,
or close as a permanent failure; the two actions are the calling operator's."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from backend.http.deps import BackendDep, Operator, Ops
from backend.http.errors import NOT_FOUND, OPS, conflict, errors, invalid
from backend.http.paging import PAGED, Paging, send_page
from backend.http.schemas import (
    CODE,
    Id,
    IdFilter,
    ManualActivation,
    PermanentFailure,
    Ticket,
)
from backend.services import support
from backend.store import listings
from protocol.http_errors import INVALID

router = APIRouter(tags=["tickets"])

TICKET_CONFLICTS = conflict("ticket_resolved", "not_an_activation_ticket", "not_failed")
Status = Annotated[Literal["OPEN", "RESOLVED"] | None, Query()]
Kind = Annotated[str | None, Query(pattern=CODE, examples=["activation_failed"])]


@router.get("/v1/ops/tickets", responses={**PAGED, **errors(*OPS, INVALID, invalid("bad_cursor"))})
async def tickets(
    _: Ops,
    backend: BackendDep,
    request: Request,
    response: Response,
    page: Paging,
    status: Status = None,
    kind: Kind = None,
    customer_id: IdFilter = None,
    purchase_id: IdFilter = None,
) -> list[Ticket]:
    """Tickets, oldest first, filtered by status, kind, customer or purchase."""
    wanted = listings.TicketFilter(status, kind, customer_id, purchase_id)
    async with backend.sessions() as session:
        rows, found = await listings.tickets(session, wanted, page)
    send_page(request, response, found)
    return [Ticket.model_validate(t) for t in rows]


@router.get("/v1/ops/tickets/{ticket_id}", responses=errors(*OPS, NOT_FOUND, INVALID))
async def ticket(ticket_id: Id, _: Ops, backend: BackendDep) -> Ticket:
    """One ticket, with its diagnostics package and who resolved it."""
    async with backend.sessions() as session:
        return Ticket.model_validate(await listings.ticket(session, ticket_id))


@router.post(
    "/v1/ops/tickets/{ticket_id}/manual-activation",
    status_code=202,
    responses=errors(*OPS, NOT_FOUND, TICKET_CONFLICTS, INVALID),
)
async def manual_activation(
    ticket_id: Id, operator: Operator, backend: BackendDep
) -> ManualActivation:
    """Ask the gateway again under a new activation id (idempotent per ticket); the
    ticket and the audit log name the calling operator."""
    async with backend.units.begin() as work:
        answer = await support.manual_activation(work, ticket_id, operator)
    await backend.relay.run_once()
    return ManualActivation.model_validate(answer)


@router.post(
    "/v1/ops/tickets/{ticket_id}/permanent-failure",
    responses=errors(*OPS, NOT_FOUND, TICKET_CONFLICTS, INVALID),
)
async def permanent_failure(
    ticket_id: Id, operator: Operator, backend: BackendDep
) -> PermanentFailure:
    """Close the ticket: every cent back (if any is still held or kept), apology offer;
    the ticket and the audit log name the calling operator."""
    async with backend.units.begin() as work:
        answer = await support.permanent_failure(work, ticket_id, operator)
    await backend.settle()
    return PermanentFailure.model_validate(answer)
