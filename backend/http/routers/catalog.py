"""What a customer may buy: ``GET /v1/catalog`` (per vehicle) and ``GET /v1/vehicles``."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from backend.http.deps import BackendDep, CustomerSession
from backend.http.errors import CUSTOMER, errors
from backend.http.schemas import Catalog, IdQuery, Vehicle
from backend.store import catalog, models, views
from protocol.http_errors import INVALID

router = APIRouter(tags=["catalog"])


@router.get("/v1/catalog", responses=errors(*CUSTOMER, INVALID))
async def get_catalog(auth: CustomerSession, backend: BackendDep, vehicle_id: IdQuery) -> Catalog:
    """The services on sale for one of the caller's vehicles, with their prices."""
    session, who, offer = auth.session, auth.customer_id, backend.catalog.current
    vehicle = await views.vehicle_of(session, vehicle_id, who)
    excluded = frozenset(await catalog.excluded_services(session, who, offer))
    return Catalog.model_validate(
        views.catalog_view(vehicle, offer.entries_for(vehicle.model, excluded))
    )


@router.get("/v1/vehicles", responses=errors(*CUSTOMER))
async def my_vehicles(auth: CustomerSession) -> list[Vehicle]:
    """The caller's vehicles."""
    rows = await auth.session.scalars(
        select(models.Vehicle).where(models.Vehicle.customer_id == auth.customer_id)
    )
    return [Vehicle(id=v.id, vin=v.vin, model=v.model) for v in rows.all()]
