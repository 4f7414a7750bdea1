"""Operations dashboard: ``GET /v1/ops/metrics/summary``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from backend.domain.handbook import parse_window
from backend.http.deps import BackendDep, Ops
from backend.http.errors import OPS, errors, invalid
from backend.http.schemas import MetricsSummary
from backend.store import views
from protocol.http_errors import INVALID

router = APIRouter(tags=["ops"])

WindowQuery = Annotated[
    str | None,
    Query(
        max_length=16,
        examples=["24h"],
        description="<n>m, <n>h or <n>d: the activations finished that long ago until now "
        "(absent: all time)",
    ),
]


@router.get("/v1/ops/metrics/summary", responses=errors(*OPS, INVALID, invalid("bad_window")))
async def metrics(_: Ops, backend: BackendDep, window: WindowQuery = None) -> MetricsSummary:
    """Counts by state, and the handbook's six metrics against their thresholds with the
    breakdowns, over the activations finished inside ``window``."""
    window_s = parse_window(window)
    async with backend.sessions() as session:
        found = await views.metrics_summary(session, backend.clock.now(), window_s)
    return MetricsSummary.model_validate(found)
