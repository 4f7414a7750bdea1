"""Purchases: buy (``POST /v1/purchases``), read one, cancel or withdraw."""

from __future__ import annotations

from fastapi import APIRouter

from backend.http.deps import AuthedSession, BackendDep, CustomerId, CustomerSession
from backend.http.errors import BODY, CUSTOMER, VSS_DOWN, conflict, errors, invalid
from backend.http.schemas import (
    CancelAnswer,
    Id,
    IdempotencyKey,
    OptionalIdempotencyKey,
    Purchase,
    PurchaseIn,
)
from backend.services import withdrawal
from backend.store import views
from protocol.http_errors import INVALID

router = APIRouter(tags=["purchases"])

CREATE_CONFLICTS = conflict(
    "idempotency_key_reused",
    "not_compatible",
    "already_purchased",
    "maintenance_overdue",
    "excluded_after_cancellation",
    "deactivation_in_progress",
)
CANCEL_CONFLICTS = conflict("activation_in_progress", "not_cancellable", "payment_in_progress")


@router.post(
    "/v1/purchases",
    status_code=202,
    responses=errors(
        *CUSTOMER,
        *BODY,
        CREATE_CONFLICTS,
        invalid("bad_start_at", "unknown_service", "unknown_price"),
        VSS_DOWN,
    ),
)
async def create_purchase(
    body: PurchaseIn,
    auth: CustomerSession,
    idempotency_key: IdempotencyKey,
    backend: BackendDep,
) -> Purchase:
    """Buy a service for one of the caller's vehicles: the card is held, the activation
    queued. Idempotent per ``Idempotency-Key``: a repeat answers the same purchase."""
    purchase, payment = await backend.purchases.create(
        auth.session, auth.customer_id, body.request(), idempotency_key
    )
    return Purchase.model_validate(views.purchase_view(purchase, payment))


@router.get("/v1/purchases/{purchase_id}", responses=errors(*CUSTOMER, INVALID))
async def get_purchase(purchase_id: Id, auth: AuthedSession) -> Purchase:
    """One of the caller's purchases (ops may read any)."""
    scope = None if auth.who.role == "ops" else auth.who.customer_id
    return Purchase.model_validate(await views.purchase_of(auth.session, purchase_id, scope))


@router.post(
    "/v1/purchases/{purchase_id}/cancel",
    responses=errors(*CUSTOMER, CANCEL_CONFLICTS, INVALID),
)
async def cancel_purchase(
    purchase_id: Id,
    customer_id: CustomerId,
    backend: BackendDep,
    idempotency_key: OptionalIdempotencyKey = None,
) -> CancelAnswer:
    """Withdrawal or subscription cancel; answers the decision and the rule applied.
    Idempotent per purchase: a repeated cancel answers the first decision."""
    async with backend.units.begin() as work:
        answer = await withdrawal.cancel(work, customer_id, purchase_id)
    await backend.settle()
    return CancelAnswer.model_validate(answer)
