"""``GET /healthz``: the process answers (no token)."""

from __future__ import annotations

from fastapi import APIRouter

from backend.http.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    return Health(status="ok")
