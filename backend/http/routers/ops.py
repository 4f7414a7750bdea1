"""Operations dashboard: ``GET /v1/ops/metrics/summary``."""

from __future__ import annotations

from fastapi import APIRouter

from backend.http.deps import BackendDep, Ops
from backend.http.errors import OPS, errors
from backend.http.schemas import MetricsSummary
from backend.store import views

router = APIRouter(tags=["ops"])


@router.get("/v1/ops/metrics/summary", responses=errors(*OPS))
async def metrics(_: Ops, backend: BackendDep) -> MetricsSummary:
    """Counts by state and the handbook ratios with their alert thresholds."""
    async with backend.sessions() as session:
        return MetricsSummary.model_validate(await views.metrics_summary(session))
