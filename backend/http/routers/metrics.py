"""``GET /metrics``: the backend's Prometheus metrics (text format, no token, like the
gateway's). Not in the OpenAPI: it is not a JSON answer."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from backend.http.deps import BackendDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(backend: BackendDep) -> Response:
    """Counters of this process; the gauges read from the database and Redis only from
    the process holding the metrics lease (``backend/metrics.py``)."""
    return Response(await backend.export_metrics(), media_type=CONTENT_TYPE_LATEST)
