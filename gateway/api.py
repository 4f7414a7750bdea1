"""The gateway HTTP API (docs/spec.md §3). Bearer token on every route but health and metrics.

``GET /v1/activations`` lists them, filtered and paginated like every list route of the
project (docs/protocol.md, "Listing activations"; the indexes: ``listing.py``).

Errors are the shared ``{"error": code, "detail": …}`` (``protocol/http_errors.py``):

====  ========================================================================
401   ``unauthorized`` (with ``WWW-Authenticate``)
404   ``not_found``: no such activation, or nothing heard from the vehicle
409   ``activation_id_reused`` (same id, another body), ``activation_ended`` (cancel)
422   ``invalid_request``: ``detail`` lists the problems (FastAPI's shape)
503   ``store_unavailable`` (Redis), ``broker_unavailable``, ``too_many_queries``;
      with ``Retry-After``
504   ``query_timeout``: the vehicle did not answer a live query in time
====  ========================================================================
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import redis.exceptions
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import fast_path
from gateway.activation import Action, FailureCategory, State
from gateway.errors import (
    ActivationConflict,
    ActivationNotFound,
    ActivationTerminal,
    BrokerUnavailable,
    TooManyQueries,
)
from gateway.events import Cancel
from gateway.listing import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ListQuery,
    decode_cursor,
    encode_cursor,
)
from gateway.retry import CLUSTER_FAILING_OVER
from gateway.schemas import (
    VIN_PROBLEM,
    Activation,
    ActivationIn,
    Health,
    Ready,
    Twin,
    VehicleAnswer,
)
from gateway.service import Gateway
from protocol.api_docs import install_docs
from protocol.http_edge import install_http_edge
from protocol.http_errors import (
    BAD_JSON,
    INVALID,
    TOO_LARGE,
    ApiError,
    ErrorDoc,
    error_response,
    error_responses,
    install_error_shape,
    problem,
)
from protocol.models import FEATURE_PATTERN, VIN_RE, CommandType
from protocol.timeutil import parse_ts

_BEARER = HTTPBearer(auto_error=False)

UNAUTHORIZED = ErrorDoc(401, "missing or wrong bearer token", ("unauthorized",))
NOT_FOUND = ErrorDoc(404, "no such activation, or nothing heard from the vehicle", ("not_found",))
ID_REUSED = ErrorDoc(409, "the activation id exists with another body", ("activation_id_reused",))
ENDED = ErrorDoc(409, "the activation already ended", ("activation_ended",))
STORE_DOWN = ErrorDoc(503, "the state store (Redis) is unavailable", ("store_unavailable",))
QUERY_DOWN = ErrorDoc(
    503,
    "the MQTT broker is not connected, or this worker waits on too many live queries",
    ("broker_unavailable", "too_many_queries"),
)
NO_ANSWER = ErrorDoc(504, "the vehicle did not answer in time", ("query_timeout",))
RETRY_AFTER = {"Retry-After": "1"}
TIMESTAMP_PROBLEM = "an RFC 3339 timestamp with an offset (2026-01-31T12:00:00Z)"
PAGE_HEADERS = {
    "X-Total-Count": {"description": "activations matching the filters",
                      "schema": {"type": "integer"}},
    "X-Next-Cursor": {"description": "`cursor` of the next page (absent on the last)",
                      "schema": {"type": "string"}},
    "Link": {"description": '`<URL>; rel="next"`: the next page (absent on the last)',
             "schema": {"type": "string"}},
}  # fmt: skip


class PemResponse(PlainTextResponse):
    media_type = "application/x-pem-file"


def create_app(gateway: Gateway, manage_lifespan: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with gateway.running():
            yield

    app = FastAPI(
        title="CaaS OTA gateway",
        version="1",
        lifespan=lifespan if manage_lifespan else None,
        # answers rendered by json.dumps, as they always were (pydantic's own JSON writer
        # would write small floats differently: 0.00001 for 1e-05)
        default_response_class=JSONResponse,
        docs_url=None,  # served from local files: protocol/api_docs.py
        redoc_url=None,
    )
    install_http_edge(app)  # body limit, NaN/Infinity → 422 (protocol/http_edge.py)
    install_error_shape(app)  # framework errors and ApiError: {"error", "detail"}
    install_docs(app)
    token = gateway.cfg.token.encode()

    async def authorized(  # async: a plain def would run in the threadpool per request
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), token):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    auth = [Depends(authorized)]
    _add_list_route(app, gateway, auth)
    _add_activation_routes(app, gateway, auth)
    _add_vehicle_routes(app, gateway, auth)
    _add_ops_routes(app, gateway)
    _add_error_handlers(app)
    _put_fast_create_first(app, gateway)
    return app


def _put_fast_create_first(app: FastAPI, gw: Gateway) -> None:
    """The plain route for a well-formed POST /v1/activations (``fast_path.py``) in front
    of the FastAPI one, which stays the documented route and answers everything else."""

    async def start(body: ActivationIn) -> tuple[Any, bool]:
        return await start_activation(gw, body)

    documented = next(
        r for r in app.router.routes
        if isinstance(r, APIRoute) and r.path == fast_path.PATH and "POST" in (r.methods or ())
    )  # fmt: skip
    plain = fast_path.fast_create_route(start, gw.cfg.token, documented.handle)
    app.router.routes.insert(0, plain)


def _add_activation_routes(app: FastAPI, gw: Gateway, auth: list[Any]) -> None:
    @app.post(
        "/v1/activations",
        dependencies=auth,
        status_code=202,
        responses={
            200: {"model": Activation, "description": "the same request again: the activation"},
            **error_responses(UNAUTHORIZED, BAD_JSON, ID_REUSED, TOO_LARGE, INVALID, STORE_DOWN),
        },
    )
    async def create(body: ActivationIn, response: Response) -> Activation:
        """Start an activation (202), or answer the one under this id (200)."""
        act, created = await start_activation(gw, body)
        if not created:
            response.status_code = 200
        return Activation.model_validate(act.to_public())

    @app.get(
        "/v1/activations/{activation_id}",
        dependencies=auth,
        responses=error_responses(UNAUTHORIZED, NOT_FOUND, INVALID, STORE_DOWN),
    )
    async def get(activation_id: str) -> Activation:
        act = await gw.store.get(activation_id)
        if act is None:
            raise ActivationNotFound(activation_id)
        return Activation.model_validate(act.to_public())

    @app.post(
        "/v1/activations/{activation_id}/cancel",
        dependencies=auth,
        responses=error_responses(UNAUTHORIZED, NOT_FOUND, ENDED, INVALID, STORE_DOWN),
    )
    async def cancel(activation_id: str) -> Activation:
        try:
            act = await gw.engine.handle(activation_id, Cancel())
        except ActivationTerminal as exc:
            raise ApiError(409, "activation_ended", str(exc)) from exc
        return Activation.model_validate(act.to_public())


async def start_activation(gw: Gateway, body: ActivationIn) -> tuple[Any, bool]:
    """The activation the request names, stored and started: (activation, created)."""
    overrides = body.policy.model_dump(exclude_none=True) if body.policy else {}
    try:
        policy = gw.cfg.policy.merged(overrides)
    except ValueError as exc:
        loc = ("body", "policy")
        found = problem(loc, f"invalid policy: {exc}", "invalid_policy")
        raise RequestValidationError([found]) from exc
    try:
        return await gw.engine.create(
            activation_id=body.activation_id,
            vin=body.vin,
            feature=body.feature,
            action=Action(body.action),
            policy=policy,
            body=body.model_dump(mode="json"),
        )
    except ActivationConflict as exc:
        raise ApiError(409, "activation_id_reused", str(exc)) from exc


def _add_list_route(app: FastAPI, gw: Gateway, auth: list[Any]) -> None:
    @app.get(
        "/v1/activations",
        dependencies=auth,
        responses={
            200: {"headers": PAGE_HEADERS},
            **error_responses(UNAUTHORIZED, INVALID, STORE_DOWN),
        },
    )
    async def list_activations(
        request: Request,
        response: Response,
        state: State | None = None,
        failure_category: FailureCategory | None = None,
        feature: Annotated[str | None, Query(pattern=FEATURE_PATTERN)] = None,
        vin: str | None = None,
        since: Annotated[str | None, Query(description="RFC 3339; created_at >= since")] = None,
        until: Annotated[str | None, Query(description="RFC 3339; created_at < until")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(description="X-Next-Cursor of a page")] = None,
        order: Literal["asc", "desc"] = "asc",
    ) -> list[Activation]:
        """Activations, oldest first (``order=desc``: newest first), ``limit`` a page.
        The next page: the ``Link: <…>; rel="next"`` URL, or the same query with
        ``cursor`` = ``X-Next-Cursor`` (both absent on the last page); ``X-Total-Count``:
        how many match the filters."""
        query = ListQuery(
            state=state.value if state else "",
            category=failure_category.value if failure_category else "",
            feature=feature or "",
            limit=limit,
            order=order,
            **_checked_query(vin, since, until, cursor),
        )
        page = await gw.store.list_page(query)
        response.headers["X-Total-Count"] = str(page.total)
        if page.after:
            after = encode_cursor(page.after)
            response.headers["X-Next-Cursor"] = after
            response.headers["Link"] = (
                f'<{request.url.include_query_params(cursor=after)}>; rel="next"'
            )
        return [Activation.model_validate(act.to_public()) for act in page.activations]


def _checked_query(
    vin: str | None, since: str | None, until: str | None, cursor: str | None
) -> dict[str, Any]:
    """The list's query values that need more than a type: 422 naming every bad one."""
    problems: list[dict[str, Any]] = []

    def read(name: str, text: str | None, parse: Any, type_: str, msg: str = "") -> Any:
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as exc:
            problems.append(problem(("query", name), msg or str(exc), type_, text))
            return None

    found = {
        "vin": read("vin", vin, _vin, "invalid_vin", VIN_PROBLEM) or "",
        "since": read("since", since, parse_ts, "invalid_timestamp", TIMESTAMP_PROBLEM),
        "until": read("until", until, parse_ts, "invalid_timestamp", TIMESTAMP_PROBLEM),
        "after": read("cursor", cursor, decode_cursor, "invalid_cursor") or "",
    }
    if None not in (found["since"], found["until"]) and found["until"] < found["since"]:
        problems.append(problem(("query", "until"), "before since", "invalid_range", until))
    if problems:
        raise RequestValidationError(problems)
    return found


def _vin(text: str) -> str:
    if not VIN_RE.match(text):
        raise ValueError(VIN_PROBLEM)
    return text


def _add_vehicle_routes(app: FastAPI, gw: Gateway, auth: list[Any]) -> None:
    def check_vin(vin: str) -> str:
        if not VIN_RE.match(vin):
            raise RequestValidationError(
                [problem(("path", "vin"), VIN_PROBLEM, "invalid_vin", vin)]
            )
        return vin

    @app.get(
        "/v1/vehicles/{vin}",
        dependencies=auth,
        responses=error_responses(UNAUTHORIZED, NOT_FOUND, INVALID, STORE_DOWN),
    )
    async def twin(vin: str) -> Twin:
        found = await gw.store.twin(check_vin(vin))
        if found is None:
            raise ApiError(404, "not_found", f"nothing heard from {vin}")
        return Twin.model_validate(found.to_public())

    async def live(vin: str, ctype: CommandType) -> VehicleAnswer:
        timeout = gw.cfg.policy.status_query_timeout_s
        command_id, answer = await gw.queries.ask(check_vin(vin), ctype, timeout)
        if answer is None:
            raise ApiError(504, "query_timeout", f"{ctype.value} query {command_id} "
                           f"unanswered after {timeout:g}s")  # fmt: skip
        return VehicleAnswer.model_validate(answer)

    live_errors = error_responses(UNAUTHORIZED, INVALID, QUERY_DOWN, STORE_DOWN, NO_ANSWER)

    @app.post("/v1/vehicles/{vin}/status-query", dependencies=auth, responses=live_errors)
    async def status_query(vin: str) -> VehicleAnswer:
        """Ask the vehicle for its state now (waits up to the status query timeout)."""
        return await live(vin, CommandType.STATUS)

    @app.post("/v1/vehicles/{vin}/diagnostics", dependencies=auth, responses=live_errors)
    async def diagnostics(vin: str) -> VehicleAnswer:
        """Ask the vehicle for its diagnostics package now."""
        return await live(vin, CommandType.DIAGNOSTICS)

    @app.get(
        "/v1/keys",
        dependencies=auth,
        response_class=PemResponse,
        responses=error_responses(UNAUTHORIZED, by_reference=True),
    )
    async def keys() -> PemResponse:
        """The public key the vehicles check command signatures with (Ed25519, PEM)."""
        return PemResponse(gw.public_pem.decode())


def _add_ops_routes(app: FastAPI, gw: Gateway) -> None:
    @app.get("/healthz")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Ready,
        responses={
            503: {
                "model": Ready,
                "description": "not ready: MQTT or Redis is down, or the twins are not loaded yet",
            }
        },
    )
    async def readyz() -> JSONResponse:
        """Ready to take work: connected to the broker, Redis answers and the twins are
        loaded from the retained state (503 with the reason otherwise)."""
        reason = await gw.not_ready()
        body = {"ready": reason is None, "reason": reason}
        return JSONResponse(body, status_code=200 if reason is None else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text. The gauges read from Redis come only from the worker that
        holds the exporter lease (gateway/exporter.py), so a sum over workers is right."""
        snapshot = None
        with contextlib.suppress(Exception):  # metrics must answer while Redis is away
            if await gw.exporter.hold():
                snapshot = await gw.store.gauges()
        gw.metrics.set_gauges(snapshot)
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ActivationNotFound)
    async def not_found(request: Request, exc: ActivationNotFound) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        """A dependency is down or saturated: 503, and a hint to come back shortly."""
        if isinstance(exc, BrokerUnavailable):
            return error_response(503, "broker_unavailable", str(exc), RETRY_AFTER)
        if isinstance(exc, TooManyQueries):
            return error_response(503, "too_many_queries", str(exc), RETRY_AFTER)
        detail = "state store (Redis) unavailable"
        return error_response(503, "store_unavailable", detail, RETRY_AFTER)

    redis_down = (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        *CLUSTER_FAILING_OVER,
    )
    for unavailable_error in (BrokerUnavailable, TooManyQueries, *redis_down):
        app.add_exception_handler(unavailable_error, unavailable)
