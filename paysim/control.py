"""Control routes: steer the failure modes and read what happened (tests, demos).

    GET   /control/config      the failure modes now
    PATCH /control/config      change some of them (until a restart; the environment's
                               CAAS_PAYSIM_* values come back then)
    POST  /control/timeouts    {"op": "capture", "count": 3}: the next 3 captures act,
                               then answer 504 (the answer is stored under the key)
    GET   /control/stats       calls by op, real captures by payment, payments captured
                               more than once (must stay 0), open authorizations,
                               webhooks pending / delivered

Same bearer key as ``/v1`` (the app adds the dependency).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from paysim.ledger import Ledger

Rate = Field(default=None, ge=0, le=1)


class ModesPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    decline_rate: float | None = Rate
    timeout_rate: float | None = Rate
    settle_delay_s: float | None = Field(default=None, ge=0, le=86_400)
    settle_fail_rate: float | None = Rate
    duplicate_rate: float | None = Rate
    reorder: bool | None = None


class TimeoutsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal["authorize", "capture", "cancel", "charge", "refund"]
    count: int = Field(ge=0, le=1_000_000)


def control_routes(ledger: Ledger) -> APIRouter:
    router = APIRouter(prefix="/control")

    @router.get("/config")
    async def get_config() -> dict[str, Any]:
        return ledger.modes.as_dict()

    @router.patch("/config")
    async def patch_config(body: ModesPatch) -> dict[str, Any]:
        for name, value in body.model_dump(exclude_none=True).items():
            setattr(ledger.modes, name, value)
        if body.seed is not None:
            ledger.reseed()  # the same seed replays the same sequence of outcomes
        return ledger.modes.as_dict()

    @router.post("/timeouts")
    async def force_timeouts(body: TimeoutsIn) -> dict[str, int]:
        ledger.forced_timeouts[body.op] = body.count
        return {op: n for op, n in ledger.forced_timeouts.items() if n > 0}

    @router.get("/stats")
    async def stats() -> dict[str, Any]:
        return ledger.stats()

    return router
