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
    """The services on sale for one of the caller's vehicles (those its model and
    firmware can run: the catalog's rules), with their prices."""
    session, who = auth.session, auth.customer_id
    vehicle, version = await views.vehicle_and_catalog_version(session, vehicle_id, who)
    offer = await backend.catalog.at(session, version)  # reloaded if the rules moved
    excluded = frozenset(await catalog.excluded_services(session, who, offer))
    entries = offer.entries_for(vehicle.model, vehicle.firmware, excluded)
    return Catalog.model_validate(views.catalog_view(vehicle, entries))


@router.get("/v1/vehicles", responses=errors(*CUSTOMER))
async def my_vehicles(auth: CustomerSession) -> list[Vehicle]:
    """The caller's vehicles."""
    rows = await auth.session.scalars(
        select(models.Vehicle).where(models.Vehicle.customer_id == auth.customer_id)
    )
    return [Vehicle(id=v.id, vin=v.vin, model=v.model, firmware=v.firmware) for v in rows.all()]
