"""The HTTP edge shared by all services: what every request meets before routing.

The gateway (``gateway/api.py``), the backend (``backend/http/app.py``), the payment
provider (``paysim/app.py``) and the simulator's control API (``vehicle_sim/control.py``)
each call ``install_http_edge(app)`` on the FastAPI app they build. It installs two
things.

**Request body limit** (``HttpEdge``, a pure ASGI middleware, default 1 MiB). It runs
before routing and authentication (FastAPI reads and parses a body before it runs a
route's dependencies, so without it anyone could make a service hold any body in memory):

* a ``Content-Length`` above the limit is answered 413 at once, the app is not called and
  the body is not read; the answer says ``Connection: close``;
* a body without ``Content-Length`` (chunked) is counted while the app reads it; the
  chunk that would pass the limit is not handed over: the request is answered 413
  (``Connection: close``) and the app reads ``http.disconnect``, so it never sees more
  than the limit. If the app had already started its answer, the middleware raises
  ``RequestBodyTooLarge`` once the app returns, so the server closes the connection.

The 413 body is ``{"error": "payload_too_large", "detail": "request body over 1048576
bytes"}`` (the error shape of every service: ``protocol/http_errors.py``).

**Non-finite numbers.** Python's ``json`` (what FastAPI parses bodies with) accepts the
literals ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON. Pydantic then either
takes them silently (a float field without an upper bound takes ``Infinity``) or reports a
validation error whose ``input`` is that float, and FastAPI's 422 answer is rendered with
``allow_nan=False``: the renderer raises and the client gets a 500. Two parts:

* the middleware rejects them in JSON request bodies (``application/json``,
  ``application/*+json``, or no content type): 422 in the validation shape,
  ``{"error": "invalid_request", "detail": [{"type": "finite_number", "loc": ["body",
  "policy", "jitter_ratio"], "msg": "Input should be a finite number", "input": "NaN"}]}``,
  one entry per value (at most ten), ``loc`` being the value's path in the JSON
  document (just ``["body"]`` for one beyond the first 10,000 values of a huge document).
  Chosen over ``allow_inf_nan=False`` on the request models because it covers every
  route, present and future, without editing (or remembering to edit) each model,
  including fields typed ``Any`` or ``dict`` and routes that parse their body themselves
  (the backend's payment webhook). Its cost on an ordinary body is a substring search per chunk for
  ``NaN`` and ``Infinity``; only a body containing one of them is parsed here (up to
  the first literal outside a string; once more to name the paths when there is one),
  the app parsing it again if it passes. The check runs before authentication, like the
  limit: an unauthenticated body with ``NaN`` gets this 422, not 401;
* a ``RequestValidationError`` handler that renders the 422 body (FastAPI's list of
  problems under ``detail``, with ``"error": "invalid_request"``) with any non-finite
  float in it (an error raised by a validator or a route with such an input) written as
  the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``, so a validation error can
  never turn into a 500. An app that registers its own handler for
  ``RequestValidationError`` afterwards replaces this one: it should render with
  ``finite()`` too.

**The limit** is ``install_http_edge``'s ``max_body_bytes`` argument when given, else the
environment variable ``CAAS_HTTP_MAX_BODY_BYTES`` (a positive number of bytes, read when
the app is built), else 1 MiB (1,048,576 bytes). Every service's bodies are small JSON.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.http_errors import INVALID_REQUEST, PAYLOAD_TOO_LARGE, error_body

DEFAULT_MAX_BODY_BYTES = 1_048_576
MAX_BODY_ENV = "CAAS_HTTP_MAX_BODY_BYTES"
MAX_REPORTED = 10  # non-finite values named in one 422 answer
_WALK_BUDGET = 10_000  # values looked at to name them; past it they are at ["body"]
NON_FINITE_MSG = "Input should be a finite number"  # pydantic's wording for finite_number
_OVERLAP = len(b"Infinity") - 1  # bytes of a token that can sit in the previous chunk
# How long every service's server keeps an idle keep-alive connection open. Longer than
# any of the platform's own clients keep one (httpx: 5 s): the side that closes an idle
# connection must be the client, or a request sent just as the server's timer fires
# (uvicorn's default is also 5 s) meets a closed socket ("Server disconnected without
# sending a response"), which a client cannot tell from a crash.
SERVER_KEEP_ALIVE_S = 65


def serve(app: ASGIApp, host: str, port: int, log_level: str, access_log: bool = False) -> None:
    """Run ``app`` under uvicorn until stopped, with the platform's keep-alive."""
    import uvicorn  # only the entry points that serve need it

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_keep_alive=SERVER_KEEP_ALIVE_S,
    )


class RequestBodyTooLarge(Exception):
    """A body passed the limit after the app had started its answer: too late for a 413,
    so the server is made to close the connection."""


def configured_max_body_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """``CAAS_HTTP_MAX_BODY_BYTES`` when set, else 1 MiB; ValueError unless it is > 0."""
    raw = environ.get(MAX_BODY_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BODY_BYTES
    value = int(raw) if raw.isdigit() else 0
    if value < 1:
        raise ValueError(f"{MAX_BODY_ENV} must be a positive number of bytes, not {raw!r}")
    return value


def install_http_edge(app: FastAPI, max_body_bytes: int | None = None) -> None:
    """The body limit and the non-finite number rules on ``app`` (see the module)."""
    limit = configured_max_body_bytes() if max_body_bytes is None else max_body_bytes
    if limit < 1:
        raise ValueError(f"max_body_bytes must be positive, not {limit}")
    app.add_middleware(HttpEdge, max_body_bytes=limit)
    app.add_exception_handler(RequestValidationError, finite_validation_error)


async def finite_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """The 422 body (FastAPI's problems), with non-finite floats written as strings."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    body = error_body(INVALID_REQUEST, finite(jsonable_encoder(errors)))
    return JSONResponse(body, status_code=422)


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its JSON-ish literal."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


class _NonFinite:
    """Stands for a NaN / Infinity literal while a body is searched for them."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _NonFiniteSeen(Exception):
    pass


def _stop_at(literal: str) -> Any:
    raise _NonFiniteSeen(literal)


# the parser calls this for each literal: a dict lookup, no Python frame per value
_STAND_INS = {literal: _NonFinite(literal) for literal in ("NaN", "Infinity", "-Infinity")}


def non_finite_problems(body: bytes, limit: int = MAX_REPORTED) -> list[dict[str, Any]]:
    """Validation errors for the NaN / Infinity / -Infinity literals of a JSON body (at
    most ``limit``, in document order); [] when there are none (the literals were in
    strings) or the body is not JSON (the app says so)."""
    try:
        json.loads(body, parse_constant=_stop_at)  # stops at the first literal
        return []
    except _NonFiniteSeen as seen:
        first: str = seen.args[0]
    except (ValueError, RecursionError):
        return []
    try:
        document = json.loads(body, parse_constant=_STAND_INS.__getitem__)
    except (ValueError, RecursionError):
        return []  # not JSON after all, further on
    found = _non_finite_values(document, limit) or [((), first)]  # past the walk's budget
    return [
        {"type": "finite_number", "loc": ["body", *path], "msg": NON_FINITE_MSG,
         "input": literal}
        for path, literal in found
    ]  # fmt: skip


def _non_finite_values(document: Any, limit: int) -> list[tuple[tuple[str | int, ...], str]]:
    """Path and literal of the first ``limit`` non-finite values, depth first in document
    order, looking at no more than ``_WALK_BUDGET`` values (a 1 MiB body can hold half a
    million: walking them all would cost the server a second per request)."""
    if isinstance(document, _NonFinite):
        return [((), document.literal)]
    found: list[tuple[tuple[str | int, ...], str]] = []
    stack: list[tuple[tuple[str | int, ...], Iterator[tuple[str | int, Any]]]] = []
    if isinstance(document, dict | list):
        stack.append(((), _items(document)))
    budget = _WALK_BUDGET
    while stack and len(found) < limit and budget > 0:
        path, items = stack[-1]
        for key, value in items:
            budget -= 1
            if isinstance(value, _NonFinite):
                found.append(((*path, key), value.literal))
            elif isinstance(value, dict | list) and value:
                stack.append(((*path, key), _items(value)))
                break  # its children come before our next item
            if len(found) == limit or budget == 0:
                break
        else:
            stack.pop()
    return found


def _items(node: dict[str, Any] | list[Any]) -> Iterator[tuple[str | int, Any]]:
    return iter(node.items()) if isinstance(node, dict) else enumerate(node)


def _has_token(data: bytes) -> bool:
    return b"NaN" in data or b"Infinity" in data  # "-Infinity" contains "Infinity"


def _is_json(content_type: bytes | None) -> bool:
    """Whether FastAPI may parse a body of this content type as JSON."""
    if content_type is None:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def _declared(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """The request's Content-Length (None when absent, unreadable or overridden by a
    Transfer-Encoding) and whether its body is JSON."""
    length: int | None = None
    content_type: bytes | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length" and value.isdigit():
            length = int(value) if len(value) < 19 else 2**63  # int() refuses huge strings
        elif name == b"content-type":
            content_type = value
        elif name == b"transfer-encoding":
            chunked = True
    return (None if chunked else length), _is_json(content_type)


async def _answer(send: Send, status: int, content: Any, close: bool) -> None:
    body = json.dumps(content, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class HttpEdge:
    """Pure ASGI middleware: the body limit and the non-finite number check."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.too_large = error_body(PAYLOAD_TOO_LARGE, f"request body over {max_body_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, is_json = _declared(scope["headers"])
        if length is not None and length > self.max_body_bytes:
            await _answer(send, 413, self.too_large, close=True)
            return
        if length is not None and (length == 0 or not is_json):
            # the server hands over exactly Content-Length bytes: nothing to watch
            await self.app(scope, receive, send)
            return
        guard = _BodyGuard(self, is_json, receive, send)
        try:
            await self.app(scope, guard.receive, guard.send)
        except ClientDisconnect:
            if not (guard.answered or guard.cut):
                raise  # a real disconnect: not ours to hide
        if guard.cut:
            raise RequestBodyTooLarge(guard.cut)


class _BodyGuard:
    """One request's ``receive`` and ``send`` as the app sees them."""

    def __init__(self, edge: HttpEdge, is_json: bool, receive: Receive, send: Send) -> None:
        self.edge = edge
        self.is_json = is_json
        self._receive = receive
        self._send = send
        self.received = 0
        self.chunks: list[bytes] = []  # the body so far (JSON only; the app holds it too)
        self.tail = b""  # its last bytes, for a literal split across two chunks
        self.suspect = False  # NaN or Infinity seen somewhere in the body
        self.started = False  # the app started its answer
        self.answered = False  # we answered instead of the app: its messages are dropped
        self.cut = ""  # why it was refused after the app had started: the connection must close

    async def receive(self) -> Message:
        if self.answered or self.cut:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        body: bytes = message.get("body", b"")
        self.received += len(body)
        if self.received > self.edge.max_body_bytes:
            return await self._refuse(413, self.edge.too_large, close=True)
        if not self.is_json:
            return message
        if not self.suspect:
            self.suspect = _has_token(body) or (
                bool(self.chunks) and _has_token(self.tail + body[:_OVERLAP])
            )
        if message.get("more_body", False):
            self.chunks.append(body)
            self.tail = (self.tail + body[-_OVERLAP:])[-_OVERLAP:]
            return message
        chunks, self.chunks = self.chunks, []
        if self.suspect and (problems := non_finite_problems(b"".join([*chunks, body]))):
            return await self._refuse(422, error_body(INVALID_REQUEST, problems), close=False)
        return message

    async def _refuse(self, status: int, content: Any, close: bool) -> Message:
        if self.started:
            self.cut = f"{status} after the answer started: {json.dumps(content)}"
        else:
            self.answered = True
            await _answer(self._send, status, content, close)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.answered or self.cut:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
