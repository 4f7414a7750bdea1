"""What operations may read of every customer: purchases (filtered, paginated), the
customers themselves, and any customer's purchase file (expediente)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from backend.domain.states import PurchaseState
from backend.http.deps import BackendDep, Ops
from backend.http.errors import NOT_FOUND, OPS, errors, invalid
from backend.http.paging import PAGED, Paging, send_page
from backend.http.schemas import (
    CODE,
    MODEL,
    PRINTABLE,
    SERVICE_ID,
    CustomerSummary,
    Expediente,
    Id,
    IdFilter,
    OpsPurchase,
)
from backend.store import listings
from protocol.http_errors import INVALID

router = APIRouter(tags=["ops records"])

LIST_ERRORS = {**PAGED, **errors(*OPS, INVALID, invalid("bad_cursor"))}


@router.get("/v1/ops/purchases", responses=LIST_ERRORS)
async def purchases(
    _: Ops,
    backend: BackendDep,
    request: Request,
    response: Response,
    page: Paging,
    state: Annotated[PurchaseState | None, Query()] = None,
    service_id: Annotated[str | None, Query(pattern=SERVICE_ID)] = None,
    model: Annotated[str | None, Query(pattern=MODEL, description="vehicle model")] = None,
    customer_id: IdFilter = None,
    vehicle_id: IdFilter = None,
    failure_category: Annotated[str | None, Query(pattern=CODE)] = None,
) -> list[OpsPurchase]:
    """Every customer's purchases, oldest first, with the customer and vehicle model."""
    wanted = listings.PurchaseFilter(
        state.value if state else None, service_id, model, customer_id, vehicle_id,
        failure_category,
    )  # fmt: skip
    async with backend.sessions() as session:
        rows, found = await listings.purchases(session, wanted, page)
    send_page(request, response, found)
    return [OpsPurchase.model_validate(p) for p in rows]


@router.get("/v1/ops/customers", responses=LIST_ERRORS)
async def customers(
    _: Ops,
    backend: BackendDep,
    request: Request,
    response: Response,
    page: Paging,
    q: Annotated[
        str | None,
        Query(pattern=PRINTABLE, max_length=100, description="part of the name or e-mail"),
    ] = None,
) -> list[CustomerSummary]:
    """Customers, oldest first, with how many vehicles each owns (``q`` empty: all)."""
    async with backend.sessions() as session:
        rows, found = await listings.customers(session, q, page)
    send_page(request, response, found)
    return [CustomerSummary.model_validate(c) for c in rows]


@router.get(
    "/v1/ops/customers/{customer_id}/expediente", responses=errors(*OPS, NOT_FOUND, INVALID)
)
async def expediente(customer_id: Id, _: Ops, backend: BackendDep) -> Expediente:
    """Any customer's purchase file, as they see it themselves."""
    async with backend.sessions() as session:
        return Expediente.model_validate(await listings.expediente(session, customer_id))
