"""``POST /v1/activations`` without the framework's per-request machinery, for the
request every client sends.

Every activation starts with this request, and FastAPI's handling of it (dependency
solving, body parsing into a dict and then a model, validating the answer model and
encoding it again) cost about as much CPU as the rest of the request's own work
(``python -m bench micro``, row ``post_activation``). This route runs first and answers
a request that is plainly well formed: JSON content type, the exact bearer token, a
body the ``ActivationIn`` model accepts. It then does what the FastAPI route does
(``api.start_activation``, the same function) and writes ``Activation.to_public()``,
the same document the FastAPI route renders.

Anything else (no or wrong token, another content type, a body the model refuses) is
handed, body and all, to the FastAPI route, so every error answer (401, 400, 422 and
their shapes) stays exactly the documented one, and so does ``/openapi.json``: this
route is not in the schema. The body limit and the non-finite check run before either
(``protocol/http_edge.py`` is a middleware around the whole app).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.schemas import ActivationIn

Start = Callable[[ActivationIn], Awaitable[tuple[Any, bool]]]
PATH = "/v1/activations"


def fast_create_route(start: Start, token: str, fallback: ASGIApp) -> Route:
    """The route to put in front of the FastAPI one (``fallback``) for the same path."""
    endpoint = FastCreate(start, f"Bearer {token}".encode(), fallback)
    return Route(PATH, endpoint, methods=["POST"], include_in_schema=False)


class FastCreate:
    def __init__(self, start: Start, authorization: bytes, fallback: ASGIApp) -> None:
        self.start = start
        self.authorization = authorization
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await Request(scope, receive).body()
        except ClientDisconnect:  # gone, or cut off by the body limit (already answered)
            return
        wanted = self.well_formed(Headers(scope=scope), body)
        if wanted is None:
            await self.fallback(scope, replay(body, receive), send)
            return
        act, created = await self.start(wanted)
        answer = JSONResponse(act.to_public(), status_code=202 if created else 200)
        await answer(scope, receive, send)

    def well_formed(self, headers: Headers, body: bytes) -> ActivationIn | None:
        """The request's model, or None when the FastAPI route should answer it."""
        given = headers.get("authorization", "").encode()
        if not secrets.compare_digest(given, self.authorization):
            return None
        media = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            return None
        try:
            return ActivationIn.model_validate_json(body)
        except pydantic.ValidationError:
            return None


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over the body already read, then the real one."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def again() -> Message:
        return pending.pop() if pending else await receive()

    return again
