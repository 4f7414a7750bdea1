"""The catalog's compatibility rules (ops): which vehicle models and firmware each
service is sold to, and the fleet's models and firmware to write them against."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from backend.http.deps import BackendDep, Operator, Ops
from backend.http.errors import BODY, NOT_FOUND, OPS, errors, invalid
from backend.http.schemas import SERVICE_ID, CatalogRules, FleetModel, RulesIn
from backend.services import catalog_rules
from backend.store import listings

router = APIRouter(tags=["catalog rules"])

ServiceId = Annotated[str, Path(pattern=SERVICE_ID)]


@router.get("/v1/ops/catalog/rules", responses=errors(*OPS))
async def rules(_: Ops, backend: BackendDep) -> list[CatalogRules]:
    """Every service on sale with the vehicles it is sold to."""
    async with backend.sessions() as session:
        found = await catalog_rules.all_rules(session)
    return [CatalogRules.model_validate(r) for r in found]


@router.put(
    "/v1/ops/catalog/{service_id}/rules",
    responses=errors(*OPS, NOT_FOUND, *BODY, invalid("bad_rules")),
)
async def update_rules(
    service_id: ServiceId, body: RulesIn, operator: Operator, backend: BackendDep
) -> CatalogRules:
    """Replace a service's rules (audited as ``catalog_rules_updated``). Every backend
    process applies them to its next catalog read and purchase; purchases already made
    are not touched."""
    async with backend.sessions.begin() as session:
        answer = await catalog_rules.update_rules(
            session, service_id, body.raw(), operator, backend.clock.now()
        )
    return CatalogRules.model_validate(answer)


@router.get("/v1/ops/fleet/models", responses=errors(*OPS))
async def fleet_models(_: Ops, backend: BackendDep) -> list[FleetModel]:
    """The vehicle models on record, the firmware versions seen on each, how many."""
    async with backend.sessions() as session:
        return [FleetModel.model_validate(m) for m in await listings.fleet_models(session)]
