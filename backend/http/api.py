"""The backend HTTP API (SPEC §5). Customers see only their own things (404 otherwise).

Errors are JSON ``{"error": code, "detail": …}``; bad input is a 4xx, never a 5xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from backend.http.errors import install_error_handlers
from backend.service import Backend
from backend.services.auth import Principal, authenticate
from backend.services.purchases import PurchaseRequest
from backend.store import catalog, views
from backend.store.models import Ticket, Vehicle
from protocol.http_edge import install_http_edge

SERVICE_ID = r"^[a-z][a-z0-9_]{0,63}$"
RESOURCE_ID = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"  # our ids are UUIDs; never a NUL or a quote
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,255}$"  # printable ASCII, like Stripe's keys


class Temporary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["temporary"]
    days: int = Field(ge=1, le=3650)


class Permanent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["permanent"]


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["subscription"]


class PurchaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vehicle_id: str = Field(pattern=RESOURCE_ID)
    service_id: str = Field(pattern=SERVICE_ID, max_length=64)
    duration: Annotated[Temporary | Permanent | Subscription, Field(discriminator="model")]
    start_at: AwareDatetime | None = None

    def request(self) -> PurchaseRequest:
        days = self.duration.days if isinstance(self.duration, Temporary) else None
        start = _epoch(self.start_at) if self.start_at else None
        return PurchaseRequest(self.vehicle_id, self.service_id, self.duration.model, days, start)


def _epoch(value: datetime) -> float:
    try:
        return value.timestamp()
    except (OverflowError, ValueError):
        raise InvalidRequest("bad_start_at", "start_at out of range") from None


class ErrorOut(BaseModel):
    """Every error answer: a stable code and a human-readable detail."""

    error: str
    detail: str


def _doc(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "bad or unsigned webhook",
        401: "no valid bearer token",
        403: "operations role required",
        404: "not found, or not yours",
        409: "conflict (idempotency key reused, already purchased, maintenance overdue, "
        "excluded after cancellation, not cancellable, ticket resolved…)",
        503: "the maintenance system (VSS) did not answer",
    }
    return {c: {"model": ErrorOut, "description": text[c]} for c in codes}


bearer = HTTPBearer(auto_error=False)


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def _authenticated(
    session: AsyncSession, creds: HTTPAuthorizationCredentials | None
) -> Principal:
    if creds is not None and creds.credentials:
        found = await authenticate(session, creds.credentials)
        if found is not None:
            return found
    raise Unauthorized()


def _customer_of(who: Principal) -> str:
    if who.role != "customer" or who.customer_id is None:
        raise NotFound("customer", "me")
    return who.customer_id


Creds = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def principal(request: Request, creds: Creds) -> Principal:
    async with _backend(request).sessions() as session:
        return await _authenticated(session, creds)


Who = Annotated[Principal, Depends(principal)]


async def customer(who: Who) -> str:
    return _customer_of(who)


async def ops(who: Who) -> Principal:
    if who.role != "ops":
        raise Forbidden("ops")
    return who


CustomerId = Annotated[str, Depends(customer)]
Ops = Annotated[Principal, Depends(ops)]


@dataclass(frozen=True)
class Authed:
    """A request's principal and the session its token was checked in. The handler goes
    on in that session: one pool checkout and one transaction for the whole request
    (each session costs a checkout, BEGIN and COMMIT/ROLLBACK: see docs/performance.md).
    The session ends before the answer is sent (``scope="function"``)."""

    who: Principal
    session: AsyncSession

    @property
    def customer_id(self) -> str:
        return _customer_of(self.who)


async def authed(request: Request, creds: Creds) -> AsyncIterator[Authed]:
    async with _backend(request).sessions() as session:
        yield Authed(await _authenticated(session, creds), session)


async def customer_authed(
    auth: Annotated[Authed, Depends(authed, scope="function")],
) -> Authed:
    _customer_of(auth.who)  # 404 for ops tokens, as ``customer`` does
    return auth


AuthedSession = Annotated[Authed, Depends(authed, scope="function")]
CustomerSession = Annotated[Authed, Depends(customer_authed, scope="function")]


def create_app(backend: Backend, manage_lifespan: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with backend.running():
            yield

    app = FastAPI(title="CaaS backend", version="1", lifespan=lifespan if manage_lifespan else None)
    app.state.backend = backend
    install_http_edge(app)  # body limit, NaN/Infinity → 422 (protocol/http_edge.py)
    install_error_handlers(app)
    _customer_routes(app, backend)
    _ops_routes(app, backend)
    from backend.http.api_lifecycle import lifecycle_routes  # it imports this module's types

    lifecycle_routes(app, backend)
    return app


def _customer_routes(app: FastAPI, backend: Backend) -> None:
    @app.get("/v1/catalog", responses=_doc(401, 404))
    async def get_catalog(
        auth: CustomerSession, vehicle_id: Annotated[str, Query(pattern=RESOURCE_ID)]
    ) -> dict[str, Any]:
        session, who, offer = auth.session, auth.customer_id, backend.catalog.current
        vehicle = await views.vehicle_of(session, vehicle_id, who)
        excluded = frozenset(await catalog.excluded_services(session, who, offer))
        return views.catalog_view(vehicle, offer.entries_for(vehicle.model, excluded))

    @app.get("/v1/vehicles", responses=_doc(401, 404))
    async def my_vehicles(auth: CustomerSession) -> list[dict[str, Any]]:
        rows = await auth.session.scalars(
            select(Vehicle).where(Vehicle.customer_id == auth.customer_id)
        )
        return [{"id": v.id, "vin": v.vin, "model": v.model} for v in rows.all()]

    _purchase_routes(app, backend)


def _purchase_routes(app: FastAPI, backend: Backend) -> None:
    @app.post("/v1/purchases", status_code=202, responses=_doc(400, 401, 404, 409, 503))
    async def create_purchase(
        body: PurchaseIn,
        auth: CustomerSession,
        idempotency_key: Annotated[str, Header(pattern=IDEMPOTENCY_KEY)],
    ) -> dict[str, Any]:
        purchase, payment = await backend.purchases.create(
            auth.session, auth.customer_id, body.request(), idempotency_key
        )
        return views.purchase_view(purchase, payment)

    @app.get("/v1/purchases/{purchase_id}", responses=_doc(401, 404))
    async def get_purchase(
        purchase_id: Annotated[str, Path(pattern=RESOURCE_ID)], auth: AuthedSession
    ) -> dict[str, Any]:
        scope = None if auth.who.role == "ops" else auth.who.customer_id
        return await views.purchase_of(auth.session, purchase_id, scope)

    @app.get("/v1/customers/me/expediente", responses=_doc(401, 404))
    async def expediente(auth: CustomerSession) -> dict[str, Any]:
        return await views.expediente(auth.session, auth.customer_id)

    @app.get("/v1/customers/me/notifications", responses=_doc(401, 404))
    async def notifications(auth: CustomerSession) -> list[dict[str, Any]]:
        return await views.notifications(auth.session, auth.customer_id)


def _ops_routes(app: FastAPI, backend: Backend) -> None:
    @app.get("/v1/ops/tickets", responses=_doc(401, 403))
    async def tickets(
        _: Ops, status: Annotated[Literal["OPEN", "RESOLVED"] | None, Query()] = None
    ) -> list[dict[str, Any]]:
        async with backend.sessions() as session:
            query = select(Ticket).order_by(Ticket.created_at)
            if status:
                query = query.where(Ticket.status == status)
            return [views.ticket_view(t) for t in (await session.scalars(query)).all()]

    @app.get("/v1/ops/metrics/summary", responses=_doc(401, 403))
    async def metrics(_: Ops) -> dict[str, Any]:
        async with backend.sessions() as session:
            return await views.metrics_summary(session)

    @app.post("/v1/payments/webhooks", responses=_doc(400))
    async def webhook(request: Request) -> dict[str, str]:
        outcome = await backend.receive_webhook(await request.body(), dict(request.headers))
        return {"outcome": outcome}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}
