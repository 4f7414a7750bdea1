"""The provider's HTTP API (docs/paysim.md), shaped like a real provider's.

    POST /v1/authorizations                  {reference, amount_cents, currency} → hold
    POST /v1/authorizations/{id}/capture     {amount_cents}
    POST /v1/authorizations/{id}/cancel      {} (or no body)
    POST /v1/charges                         {reference, amount_cents, currency} → taken now
    POST /v1/refunds                         {payment, amount_cents}
    GET  /v1/payments/{id}                   amounts and settlement (reconciliation)
    GET  /healthz
    GET  /metrics                            Prometheus text (metrics.py), no key
    /control/…                               failure modes and statistics (control.py)

Every ``/v1`` and ``/control`` route needs ``Authorization: Bearer <key>``; every POST
an ``Idempotency-Key``. Errors are ``{"error": code, "detail": …}``, the shape of every
service (``protocol/http_errors.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from paysim.config import Resolved
from paysim.control import control_routes
from paysim.errors import Refused
from paysim.ledger import Call, Ledger
from paysim.metrics import PaysimMetrics
from paysim.store import Store
from paysim.webhooks import Deliverer
from protocol.api_docs import install_docs
from protocol.http_edge import install_http_edge
from protocol.http_errors import error_response, install_error_shape
from protocol.timeutil import SystemClock

IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,255}$"  # printable ASCII, like Stripe's keys
REFERENCE = r"^[\x20-\x7e]{1,64}$"
PAYMENT_ID = r"^(auth|ch)_[A-Za-z0-9]{1,64}$"
Amount = Annotated[int, Field(strict=True, ge=1, le=1_000_000_000)]  # cents, JSON integers
PathId = Annotated[str, Path(max_length=128)]


class PaymentIn(BaseModel):
    """An authorization (a hold) or an immediate charge."""

    model_config = ConfigDict(extra="forbid")
    reference: str = Field(pattern=REFERENCE)
    amount_cents: Amount
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class CaptureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_cents: Amount


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payment: str = Field(pattern=PAYMENT_ID)
    amount_cents: Amount


bearer = HTTPBearer(auto_error=False)


def key_check(key: str) -> Any:
    """The dependency every /v1 and /control route has: 401 without the bearer key."""
    expected = key.encode()

    async def authorized(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        given = creds.credentials.encode() if creds is not None else b""
        if not hmac.compare_digest(given, expected):
            raise Refused(401, "unauthorized", "a valid bearer key is required")

    return Depends(authorized)


def idempotency_key(key: str | None) -> str:
    """The header's value; 400 when it is missing or not printable ASCII (≤ 255)."""
    if not key:
        raise Refused(400, "idempotency_key_missing", "every POST needs an Idempotency-Key")
    if not (len(key) <= 255 and all(0x21 <= ord(c) <= 0x7E for c in key)):
        raise Refused(400, "bad_idempotency_key", "printable ASCII, at most 255 characters")
    return key


IdemKey = Annotated[str | None, Header(alias="Idempotency-Key")]


def create_app(
    ledger: Ledger, key: str, deliverer: Deliverer | None = None, poll_s: float = 0.05
) -> FastAPI:
    """The API over ``ledger``. With ``deliverer`` the app's lifespan also runs the
    webhook delivery loop (tests drive ``deliver_due`` themselves instead)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(deliverer.run(poll_s)) if deliverer else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if deliverer is not None and deliverer.client is not None:
                await deliverer.client.aclose()
            ledger.store.close()

    app = FastAPI(
        title="CaaS payment provider simulator", version="1", lifespan=lifespan,
        docs_url=None, redoc_url=None,  # /docs from local files: protocol/api_docs.py
    )  # fmt: skip
    install_http_edge(app)  # body limit, NaN/Infinity → 422 (protocol/http_edge.py)
    _error_handlers(app)
    install_docs(app)

    metrics = PaysimMetrics(ledger.store)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> Response:  # async: the store's connection is the loop's
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(_v1_routes(ledger, metrics), dependencies=[key_check(key)])
    app.include_router(control_routes(ledger), dependencies=[key_check(key)])
    return app


def _v1_routes(ledger: Ledger, metrics: PaysimMetrics) -> APIRouter:
    router = APIRouter(prefix="/v1")

    def act(op: str, key: str | None, target: str, body: BaseModel | None) -> JSONResponse:
        request = body.model_dump() if body is not None else {}
        try:
            answer = ledger.handle(Call(op, idempotency_key(key), target, request))
        except Refused as exc:
            metrics.answered(op, exc.status)
            raise
        metrics.answered(op, answer.status)
        return JSONResponse(answer.body, status_code=answer.status)

    @router.post("/authorizations", status_code=201)
    async def authorize(body: PaymentIn, key: IdemKey = None) -> JSONResponse:
        return act("authorize", key, "", body)

    @router.post("/authorizations/{auth_id}/capture", status_code=201)
    async def capture(auth_id: PathId, body: CaptureIn, key: IdemKey = None) -> JSONResponse:
        return act("capture", key, auth_id, body)

    @router.post("/authorizations/{auth_id}/cancel", status_code=201)
    async def cancel(
        auth_id: PathId, body: CancelIn | None = None, key: IdemKey = None
    ) -> JSONResponse:
        return act("cancel", key, auth_id, body)

    @router.post("/charges", status_code=201)
    async def charge(body: PaymentIn, key: IdemKey = None) -> JSONResponse:
        return act("charge", key, "", body)

    @router.post("/refunds", status_code=201)
    async def refund(body: RefundIn, key: IdemKey = None) -> JSONResponse:
        return act("refund", key, "", body)

    @router.get("/payments/{payment_id}")
    async def payment(payment_id: PathId) -> dict[str, Any]:
        try:
            found = ledger.payment(payment_id)
        except Refused as exc:
            metrics.answered("payment", exc.status)
            raise
        metrics.answered("payment", 200)
        return found

    return router


def _error_handlers(app: FastAPI) -> None:
    install_error_shape(app)  # framework errors (unparsable body, unknown route…)

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.detail, headers)


def build(settings: Resolved) -> FastAPI:
    """The service as ``python -m paysim`` runs it: the store at ``settings.db``, the
    system clock, webhooks to ``settings.webhook_url`` by the app's delivery loop."""
    base = settings.base
    store = Store(settings.db)
    clock = SystemClock()
    ledger = Ledger(store, base.modes(), clock)
    client = httpx.AsyncClient(
        timeout=base.paysim_webhook_timeout_s,
        limits=httpx.Limits(max_connections=base.paysim_webhook_concurrency),
    )
    deliverer = Deliverer(
        store,
        settings.webhook_secret,
        clock,
        client,
        settings.webhook_url,
        base.paysim_webhook_initial_backoff_s,
        base.paysim_webhook_max_backoff_s,
        base.paysim_webhook_concurrency,
    )
    return create_app(ledger, settings.key, deliverer, base.paysim_poll_s)
