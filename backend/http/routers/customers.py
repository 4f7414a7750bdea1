"""The caller's own file: ``/v1/customers/me/expediente`` and its notifications."""

from __future__ import annotations

from fastapi import APIRouter

from backend.http.deps import CustomerSession
from backend.http.errors import CUSTOMER, errors
from backend.http.schemas import Expediente, Notification
from backend.store import views

router = APIRouter(tags=["customers"])


@router.get("/v1/customers/me/expediente", responses=errors(*CUSTOMER))
async def expediente(auth: CustomerSession) -> Expediente:
    """Purchases, money moved, subscription charges, notifications, tickets, timeline."""
    return Expediente.model_validate(await views.expediente(auth.session, auth.customer_id))


@router.get("/v1/customers/me/notifications", responses=errors(*CUSTOMER))
async def notifications(auth: CustomerSession) -> list[Notification]:
    """Every message sent (or queued) to the caller, oldest first."""
    found = await views.notifications(auth.session, auth.customer_id)
    return [Notification.model_validate(n) for n in found]
