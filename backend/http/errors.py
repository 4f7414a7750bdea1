"""Backend errors → HTTP answers in the shared shape (``protocol/http_errors.py``), and
the error answers each route documents.

====  =====================================================================================
400   ``bad_request`` (body not JSON), ``bad_signature`` / ``bad_webhook`` (webhook)
401   ``unauthorized``
403   ``forbidden`` (a customer on an ops route)
404   ``not_found`` (also: anything not the caller's, and customer routes for ops tokens)
409   ``Conflict.code``: ``idempotency_key_reused``, ``already_purchased``…, plus the
      conflict's context keys (``purchase_id``, ``workshop_url``)
413   ``payload_too_large``
422   ``invalid_request`` (request validation) or ``InvalidRequest.code`` (``bad_start_at``,
      ``unknown_service``…): ``detail`` is a list of problems either way
503   ``vss_unavailable``, with ``Retry-After``
====  =====================================================================================
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from backend.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthorized,
)
from protocol.http_errors import (
    BAD_JSON,
    INVALID,
    TOO_LARGE,
    ErrorDoc,
    error_responses,
    install_error_shape,
)
from protocol.http_errors import error_response as _json

WEBHOOK_CODES = ("bad_signature", "bad_webhook")  # 400, not 422: the provider's fault

UNAUTHORIZED = ErrorDoc(401, "no valid bearer token", ("unauthorized",))
FORBIDDEN = ErrorDoc(403, "operations role required", ("forbidden",))
NOT_FOUND = ErrorDoc(404, "not found, or not the caller's", ("not_found",))
VSS_DOWN = ErrorDoc(503, "the maintenance system (VSS) did not answer", ("vss_unavailable",))
BAD_WEBHOOK = ErrorDoc(400, "bad or unsigned webhook", WEBHOOK_CODES)


def conflict(*codes: str) -> ErrorDoc:
    return ErrorDoc(409, "conflict", codes)


def invalid(*codes: str) -> ErrorDoc:
    return ErrorDoc(422, "refused input", codes)


def errors(*docs: ErrorDoc) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``."""
    return error_responses(*docs)


CUSTOMER = (UNAUTHORIZED, NOT_FOUND)  # customer routes: ops tokens get 404 too
OPS = (UNAUTHORIZED, FORBIDDEN)
BODY = (BAD_JSON, TOO_LARGE, INVALID)  # a route with a JSON body


def install_error_handlers(app: FastAPI) -> None:
    install_error_shape(app)  # framework errors (unparsable body, unknown route, 405…)

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"}
        return _json(401, "unauthorized", "a valid bearer token is required", headers)

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return _json(403, "forbidden", f"{exc.role} role required")

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _json(404, "not_found", f"{exc.kind} not found")

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _json(409, exc.code, exc.detail, extra=exc.extra)

    @app.exception_handler(InvalidRequest)
    async def invalid(_: Request, exc: InvalidRequest) -> JSONResponse:
        if exc.code in WEBHOOK_CODES:
            return _json(400, exc.code, exc.detail)
        # 422 keeps the validation shape (a list of problems), with our stable code
        return _json(422, exc.code, [{"loc": ["body"], "msg": exc.detail, "type": exc.code}])

    @app.exception_handler(DependencyUnavailable)
    async def unavailable(_: Request, exc: DependencyUnavailable) -> JSONResponse:
        headers = {"Retry-After": "30"}
        return _json(503, f"{exc.system}_unavailable", exc.detail, headers)
