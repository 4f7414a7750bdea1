"""The payment provider's webhooks: ``POST /v1/payments/webhooks`` (HMAC-signed, no token)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from backend.http.deps import BackendDep
from backend.http.errors import BAD_WEBHOOK, errors
from backend.http.schemas import WebhookOutcome
from protocol.http_errors import INVALID, TOO_LARGE

router = APIRouter(tags=["payments"])


@router.post("/v1/payments/webhooks", responses=errors(BAD_WEBHOOK, TOO_LARGE, INVALID))
async def webhook(request: Request, backend: BackendDep) -> WebhookOutcome:
    """Verify, then apply a provider webhook exactly once (``duplicate`` on a repeat)."""
    outcome = await backend.receive_webhook(await request.body(), dict(request.headers))
    return WebhookOutcome(outcome=outcome)
