"""Subscription billing runs (ops): ``POST /v1/ops/billing/runs``."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError

from backend.http.deps import BackendDep, Ops
from backend.http.errors import BODY, OPS, errors, invalid
from backend.http.schemas import BillingRun, BillingRunIn
from backend.service import Backend
from backend.store import billing

router = APIRouter(tags=["billing"])


@router.post(
    "/v1/ops/billing/runs",
    responses=errors(*OPS, *BODY, invalid("bad_month", "month_not_complete")),
)
async def billing_run(body: BillingRunIn, _: Ops, backend: BackendDep) -> BillingRun:
    """Bill a completed month in arrears; running it again charges nothing more."""
    created = await _bill(backend, body.month)
    await backend.charges.run_pending()
    await backend.settle()
    async with backend.sessions() as session:
        charges = await billing.charges_of_month(session, body.month)
    return BillingRun.model_validate(
        {
            "month": body.month,
            "charges_created": created,
            "charges": [billing.charge_view(c) for c in charges],
        }
    )


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
