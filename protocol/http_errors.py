"""The one error body of every service's HTTP API, and its OpenAPI description.

Every error answer of the backend, the gateway and the payment provider is a JSON object

    {"error": "<stable code>", "detail": "<what went wrong>"}

``error`` is a machine-readable code that does not change between releases (``not_found``,
``unauthorized``, ``already_purchased``…); ``detail`` is for people, except on a 422,
where it is FastAPI's list of problems (``type``, ``loc``, ``msg``, ``input``…), so a
client finds the offending field. Some answers add keys that give context (a backend 409
names the ``purchase_id`` concerned; ``maintenance_overdue`` adds the ``workshop_url``).

Codes every service shares (the framework's and the HTTP edge's answers):

====  ======================  =====================================================
400   ``bad_request``         the body is not JSON
401   ``unauthorized``        no or wrong bearer token (with ``WWW-Authenticate``)
404   ``not_found``           unknown route, or the resource does not exist
405   ``method_not_allowed``  (with ``Allow``)
413   ``payload_too_large``   body over the limit (``protocol/http_edge.py``)
422   ``invalid_request``     request validation; ``detail`` is the list of problems
====  ======================  =====================================================

``error_responses`` builds a route's ``responses=`` from ``ErrorDoc`` entries: each status
documented with the shared ``ErrorBody`` schema, its codes in the description and in the
``x-error-codes`` extension of the OpenAPI response.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

BAD_REQUEST = "bad_request"
UNAUTHORIZED = "unauthorized"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
PAYLOAD_TOO_LARGE = "payload_too_large"
INVALID_REQUEST = "invalid_request"

FRAMEWORK_CODES: Mapping[int, str] = {
    400: BAD_REQUEST,
    401: UNAUTHORIZED,
    403: "forbidden",
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: PAYLOAD_TOO_LARGE,
    422: INVALID_REQUEST,
}


class Problem(BaseModel):
    """One entry of a 422's ``detail``: FastAPI's (pydantic's) validation error."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(examples=["string_pattern_mismatch"])
    loc: list[str | int] = Field(examples=[["body", "vehicle_id"]])
    msg: str
    input: Any = None


class ErrorBody(BaseModel):
    """Every error answer of every service."""

    model_config = ConfigDict(extra="allow")
    error: str = Field(description="stable machine-readable code", examples=["not_found"])
    detail: str | list[Problem] = Field(
        description="what went wrong; on a 422 the list of problems, one per field"
    )
    purchase_id: str | None = Field(
        default=None, description="backend 409s about a purchase: the purchase concerned"
    )
    workshop_url: str | None = Field(
        default=None, description="backend 409 maintenance_overdue: where to book it"
    )


ERROR_BODY_REF = "#/components/schemas/ErrorBody"


def error_body(code: str, detail: str | list[Any], **extra: object) -> dict[str, Any]:
    return {"error": code, "detail": detail, **extra}


def error_response(
    status: int,
    code: str,
    detail: str | list[Any],
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> JSONResponse:
    body = error_body(code, detail, **(extra or {}))
    return JSONResponse(body, status_code=status, headers=headers)


def problem(loc: tuple[str | int, ...], msg: str, type_: str, value: Any = None) -> dict[str, Any]:
    """A 422 problem of our own, shaped like FastAPI's."""
    found: dict[str, Any] = {"type": type_, "loc": list(loc), "msg": msg}
    if value is not None:
        found["input"] = value
    return found


class ApiError(StarletteHTTPException):
    """An HTTP error with its stable code: ``raise ApiError(504, "query_timeout", "…")``."""

    def __init__(
        self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, detail, dict(headers) if headers else None)
        self.code = code


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    """``HTTPException`` (the framework's: unparsable body, unknown route, 405…; or an
    ``ApiError``) in the shared shape, its headers (``Allow``, ``WWW-Authenticate``) kept."""
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = getattr(exc, "code", None) or FRAMEWORK_CODES.get(status, f"http_{status}")
    return error_response(status, code, str(exc.detail), headers=exc.headers)


def install_error_shape(app: FastAPI) -> None:
    """Framework errors in the shared shape (validation errors: ``install_http_edge``)."""
    app.add_exception_handler(StarletteHTTPException, http_error)


@dataclass(frozen=True, slots=True)
class ErrorDoc:
    """An error a route may answer: its status, when, and the ``error`` codes it carries."""

    status: int
    when: str
    codes: tuple[str, ...]


BAD_JSON = ErrorDoc(400, "the body is not JSON", (BAD_REQUEST,))
TOO_LARGE = ErrorDoc(413, "the body is over the size limit", (PAYLOAD_TOO_LARGE,))
INVALID = ErrorDoc(422, "invalid input: `detail` lists the problems", (INVALID_REQUEST,))


def error_responses(*docs: ErrorDoc, by_reference: bool = False) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``: every status of ``docs`` with the ``ErrorBody`` schema,
    its codes in the description and in ``x-error-codes`` (entries of one status merge).

    ``by_reference``: for a route whose own answer is not JSON (FastAPI would file the
    schema under the route's media type); the app's other routes must name ``ErrorBody``
    (so that it is among the schemas)."""
    merged: dict[int, ErrorDoc] = {}
    for doc in docs:
        seen = merged.get(doc.status)
        if seen is not None:
            codes = seen.codes + tuple(c for c in doc.codes if c not in seen.codes)
            doc = ErrorDoc(doc.status, f"{seen.when}; {doc.when}", codes)
        merged[doc.status] = doc
    schema: dict[str, Any] = (
        {"content": {"application/json": {"schema": {"$ref": ERROR_BODY_REF}}}}
        if by_reference
        else {"model": ErrorBody}
    )
    return {
        status: {
            **schema,
            "description": f"{doc.when} (`error`: {', '.join(doc.codes)})",
            "x-error-codes": list(doc.codes),
        }
        for status, doc in sorted(merged.items())
    }
