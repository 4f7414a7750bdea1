"""The gateway HTTP API (SPEC §3). Bearer token on every route but health and metrics."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import redis.exceptions
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.activation import Action
from gateway.errors import (
    ActivationConflict,
    ActivationNotFound,
    ActivationTerminal,
    BrokerUnavailable,
    GatewayError,
    TooManyQueries,
)
from gateway.events import Cancel
from gateway.policy import MAX_ATTEMPTS_LIMIT
from gateway.service import Gateway
from protocol.http_edge import install_http_edge
from protocol.models import FEATURE_RE, VIN_RE, CommandType

_BEARER = HTTPBearer(auto_error=False)
ACTIVATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class PolicyIn(BaseModel):
    """A per-request RetryPolicy; fields left out take the configured defaults."""

    model_config = ConfigDict(extra="forbid")
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS_LIMIT)
    initial_backoff_s: float | None = Field(default=None, ge=0, le=86_400)
    backoff_multiplier: float | None = Field(default=None, ge=1, le=100)
    max_backoff_s: float | None = Field(default=None, ge=0, le=7 * 86_400)
    jitter_ratio: float | None = Field(default=None, ge=0, lt=1)
    status_query_timeout_s: float | None = Field(default=None, gt=0, le=3600)
    ack_timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    ready_wait_s: float | None = Field(default=None, ge=0, le=7 * 86_400)
    outcome_wait_s: float | None = Field(default=None, ge=0, le=7 * 86_400)


class ActivationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    activation_id: str = Field(pattern=ACTIVATION_ID_PATTERN)
    vin: str
    feature: str
    action: Literal["activate", "deactivate"]
    policy: PolicyIn | None = None

    @field_validator("vin")
    @classmethod
    def _vin(cls, value: str) -> str:
        if not VIN_RE.match(value):
            raise ValueError("a VIN is 17 characters of A-H J-N P R-Z 0-9 (ISO 3779)")
        return value

    @field_validator("feature")
    @classmethod
    def _feature(cls, value: str) -> str:
        if not FEATURE_RE.match(value):
            raise ValueError("a feature id is snake_case: [a-z][a-z0-9_]{0,63}")
        return value


def create_app(gateway: Gateway, manage_lifespan: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with gateway.running():
            yield

    app = FastAPI(
        title="CaaS OTA gateway",
        version="1",
        lifespan=lifespan if manage_lifespan else None,
    )
    install_http_edge(app)  # body limit, NaN/Infinity → 422 (protocol/http_edge.py)
    token = gateway.cfg.token.encode()

    async def authorized(  # async: a plain def would run in the threadpool per request
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), token):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    auth = [Depends(authorized)]
    _add_activation_routes(app, gateway, auth)
    _add_vehicle_routes(app, gateway, auth)
    _add_ops_routes(app, gateway)
    return app


def _add_activation_routes(app: FastAPI, gw: Gateway, auth: list[Any]) -> None:
    @app.post("/v1/activations", dependencies=auth, status_code=202)
    async def create(body: ActivationIn, response: Response) -> dict[str, Any]:
        overrides = body.policy.model_dump(exclude_none=True) if body.policy else {}
        try:
            policy = gw.cfg.policy.merged(overrides)
        except ValueError as exc:
            raise HTTPException(422, f"invalid policy: {exc}") from exc
        try:
            act, created = await gw.engine.create(
                activation_id=body.activation_id,
                vin=body.vin,
                feature=body.feature,
                action=Action(body.action),
                policy=policy,
                body=body.model_dump(mode="json"),
            )
        except ActivationConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        if not created:
            response.status_code = 200
        return act.to_public()

    @app.get("/v1/activations/{activation_id}", dependencies=auth)
    async def get(activation_id: str) -> dict[str, Any]:
        act = await gw.store.get(activation_id)
        if act is None:
            raise HTTPException(404, f"no activation {activation_id}")
        return act.to_public()

    @app.post("/v1/activations/{activation_id}/cancel", dependencies=auth)
    async def cancel(activation_id: str) -> dict[str, Any]:
        try:
            act = await gw.engine.handle(activation_id, Cancel())
        except ActivationNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except ActivationTerminal as exc:
            raise HTTPException(409, str(exc)) from exc
        return act.to_public()


def _add_vehicle_routes(app: FastAPI, gw: Gateway, auth: list[Any]) -> None:
    def check_vin(vin: str) -> str:
        if not VIN_RE.match(vin):
            raise HTTPException(422, "a VIN is 17 characters of A-H J-N P R-Z 0-9 (ISO 3779)")
        return vin

    @app.get("/v1/vehicles/{vin}", dependencies=auth)
    async def twin(vin: str) -> dict[str, Any]:
        found = await gw.store.twin(check_vin(vin))
        if found is None:
            raise HTTPException(404, f"nothing heard from {vin}")
        return found.to_public()

    async def live(vin: str, ctype: CommandType) -> dict[str, Any]:
        timeout = gw.cfg.policy.status_query_timeout_s
        command_id, answer = await gw.queries.ask(check_vin(vin), ctype, timeout)
        if answer is None:
            raise HTTPException(504, f"{ctype.value} query {command_id} unanswered after "
                                f"{timeout:g}s")  # fmt: skip
        return answer

    @app.post("/v1/vehicles/{vin}/status-query", dependencies=auth)
    async def status_query(vin: str) -> dict[str, Any]:
        return await live(vin, CommandType.STATUS)

    @app.post("/v1/vehicles/{vin}/diagnostics", dependencies=auth)
    async def diagnostics(vin: str) -> dict[str, Any]:
        return await live(vin, CommandType.DIAGNOSTICS)

    @app.get("/v1/keys", dependencies=auth)
    async def keys() -> PlainTextResponse:
        return PlainTextResponse(gw.public_pem.decode(), media_type="application/x-pem-file")


def _add_ops_routes(app: FastAPI, gw: Gateway) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok = await gw.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        with contextlib.suppress(Exception):  # metrics must answer while Redis is away
            gw.metrics.set_gauges(*await gw.store.gauges())
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(ActivationNotFound)
    async def not_found(request: Request, exc: ActivationNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        """A dependency is down or saturated: 503, and a hint to come back shortly."""
        detail = str(exc) if isinstance(exc, GatewayError) else "state store (Redis) unavailable"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})

    redis_down = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    for unavailable_error in (BrokerUnavailable, TooManyQueries, *redis_down):
        app.add_exception_handler(unavailable_error, unavailable)
