"""Issue 5 routes: cancel/withdrawal, theft report, support actions, billing runs,
maintenance check. Every answer is machine-readable; bad input is a 4xx."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from backend.errors import NotFound
from backend.http.api import CustomerId, Ops, _doc
from backend.service import Backend
from backend.services import support, withdrawal
from backend.store import billing
from backend.store.models import Vehicle

RESOURCE_ID = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,255}$"
Id = Annotated[str, Path(pattern=RESOURCE_ID)]


class BillingRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-11"])


def lifecycle_routes(app: FastAPI, backend: Backend) -> None:

    @app.post("/v1/purchases/{purchase_id}/cancel", responses=_doc(401, 404, 409))
    async def cancel_purchase(
        purchase_id: Id,
        customer_id: CustomerId,
        idempotency_key: Annotated[str | None, Header(pattern=IDEMPOTENCY_KEY)] = None,
    ) -> dict[str, Any]:
        """Withdrawal or subscription cancel; answers the decision and the rule applied.
        Idempotent per purchase: a repeated cancel answers the first decision."""
        async with backend.units.begin() as work:
            answer = await withdrawal.cancel(work, customer_id, purchase_id)
        await backend.settle()
        return answer

    @app.post("/v1/vehicles/{vehicle_id}/theft-report", responses=_doc(401, 404))
    async def theft_report(vehicle_id: Id, customer_id: CustomerId) -> dict[str, Any]:
        async with backend.units.begin() as work:
            answer = await support.theft_report(work, customer_id, vehicle_id)
        await backend.settle()
        return answer

    _support_routes(app, backend)
    _ops_routes(app, backend)


def _support_routes(app: FastAPI, backend: Backend) -> None:
    @app.post(
        "/v1/ops/tickets/{ticket_id}/manual-activation",
        status_code=202,
        responses=_doc(401, 403, 404, 409),
    )
    async def manual_activation(ticket_id: Id, _: Ops) -> dict[str, Any]:
        async with backend.units.begin() as work:
            answer = await support.manual_activation(work, ticket_id)
        await backend.relay.run_once()
        return answer

    @app.post("/v1/ops/tickets/{ticket_id}/permanent-failure", responses=_doc(401, 403, 404, 409))
    async def permanent_failure(ticket_id: Id, _: Ops) -> dict[str, Any]:
        async with backend.units.begin() as work:
            answer = await support.permanent_failure(work, ticket_id)
        await backend.settle()
        return answer


def _ops_routes(app: FastAPI, backend: Backend) -> None:
    @app.post("/v1/ops/billing/runs", responses=_doc(401, 403))
    async def billing_run(body: BillingRunIn, _: Ops) -> dict[str, Any]:
        """Bill a completed month in arrears; running it again charges nothing more."""
        created = await _bill(backend, body.month)
        await backend.charges.run_pending()
        await backend.settle()
        async with backend.sessions() as session:
            charges = await billing.charges_of_month(session, body.month)
        return {
            "month": body.month,
            "charges_created": created,
            "charges": [billing.charge_view(c) for c in charges],
        }

    @app.post("/v1/ops/vehicles/{vehicle_id}/maintenance-check", responses=_doc(401, 403, 404, 503))
    async def maintenance_check(vehicle_id: Id, _: Ops) -> dict[str, Any]:
        """Ask VSS; when overdue, the customer is told once (warranty, restrictions)."""
        async with backend.sessions() as session:
            vehicle = await session.get(Vehicle, vehicle_id)
        if vehicle is None:
            raise NotFound("vehicle", vehicle_id)
        status = await backend.maintenance.status(vehicle.vin)
        async with backend.units.begin() as work:
            notified = await support.warranty_notice(work, vehicle_id, status)
        await backend.settle()
        return {"vehicle_id": vehicle_id, "overdue": status.overdue, "notified": notified}


async def _bill(backend: Backend, month: str) -> int:
    for attempt in (1, 2):
        try:
            async with backend.sessions.begin() as session:
                created, _ = await billing.create_charges(session, month, backend.clock.now())
            return created
        except IntegrityError:  # a concurrent run (the scheduler) wrote them first
            if attempt == 2:
                raise
    return 0
