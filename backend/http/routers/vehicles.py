"""A vehicle's incidents: the customer's theft report, the ops maintenance check."""

from __future__ import annotations

from fastapi import APIRouter

from backend.errors import NotFound
from backend.http.deps import BackendDep, CustomerId, Ops
from backend.http.errors import CUSTOMER, NOT_FOUND, OPS, VSS_DOWN, errors
from backend.http.schemas import Id, MaintenanceCheck, TheftReport
from backend.services import support
from backend.store.models import Vehicle
from protocol.http_errors import INVALID

router = APIRouter(tags=["vehicles"])


@router.post("/v1/vehicles/{vehicle_id}/theft-report", responses=errors(*CUSTOMER, INVALID))
async def theft_report(vehicle_id: Id, customer_id: CustomerId, backend: BackendDep) -> TheftReport:
    """Record the theft; no money moves. Lists what the customer may cancel."""
    async with backend.units.begin() as work:
        answer = await support.theft_report(work, customer_id, vehicle_id)
    await backend.settle()
    return TheftReport.model_validate(answer)


@router.post(
    "/v1/ops/vehicles/{vehicle_id}/maintenance-check",
    responses=errors(*OPS, NOT_FOUND, INVALID, VSS_DOWN),
)
async def maintenance_check(vehicle_id: Id, _: Ops, backend: BackendDep) -> MaintenanceCheck:
    """Ask VSS; when overdue, the customer is told once (warranty, restrictions)."""
    async with backend.sessions() as session:
        vehicle = await session.get(Vehicle, vehicle_id)
    if vehicle is None:
        raise NotFound("vehicle", vehicle_id)
    status = await backend.maintenance.status(vehicle.vin)
    async with backend.units.begin() as work:
        notified = await support.warranty_notice(work, vehicle_id, status)
    await backend.settle()
    return MaintenanceCheck(vehicle_id=vehicle_id, overdue=status.overdue, notified=notified)
