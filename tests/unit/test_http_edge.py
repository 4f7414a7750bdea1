"""protocol/http_edge.py at the ASGI level: the body limit (413) and NaN / Infinity
(422), driven with raw ASGI messages and through FastAPI with httpx."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.types import Message, Receive, Scope, Send

from protocol.http_edge import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_BODY_ENV,
    SERVER_KEEP_ALIVE_S,
    HttpEdge,
    RequestBodyTooLarge,
    configured_max_body_bytes,
    install_http_edge,
    non_finite_problems,
)

pytestmark = pytest.mark.timeout(10)
LIMIT = 100


class EchoApp:
    """Reads the whole body (as FastAPI does), then answers 200 with it; after an
    ``http.disconnect`` it still tries to answer 400, as FastAPI does."""

    def __init__(self, answer_first: bool = False) -> None:
        self.answer_first = answer_first
        self.called = False
        self.body = b""
        self.disconnected = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        if self.answer_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                break
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if not self.answer_first:
            status = 400 if self.disconnected else 200
            await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


class Driver:
    """A server's side of one request: hands out the chunks, records what is sent."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.messages: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]
        self.pulled = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.pulled == len(self.messages):
            return {"type": "http.disconnect"}
        self.pulled += 1
        return self.messages[self.pulled - 1]

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def run(
        self, app: Any, headers: list[tuple[bytes, bytes]], limit: int = LIMIT
    ) -> list[Message]:
        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        await HttpEdge(app, max_body_bytes=limit)(scope, self.receive, self.send)
        return self.sent

    def status(self) -> int:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.sent
        return int(starts[0]["status"])

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))

    def header(self, name: bytes) -> bytes | None:
        return dict(self.sent[0]["headers"]).get(name)


JSON = (b"content-type", b"application/json")


def length(n: int) -> tuple[bytes, bytes]:
    return (b"content-length", str(n).encode())


async def test_declared_length_over_limit_is_413_before_the_app_runs() -> None:
    """Content-Length above the limit → 413 + Connection: close; app not called, body unread."""
    app, driver = EchoApp(), Driver([b"x" * (LIMIT + 1)])
    await driver.run(app, [JSON, length(LIMIT + 1)])
    assert driver.status() == 413
    assert driver.json() == {
        "error": "payload_too_large",
        "detail": f"request body over {LIMIT} bytes",
    }
    assert driver.header(b"connection") == b"close"
    assert not app.called
    assert driver.pulled == 0


async def test_chunked_body_over_limit_is_413_and_the_app_gets_at_most_the_limit() -> None:
    """No Content-Length: the chunk passing the limit is withheld, 413 is sent, the app
    reads a disconnect and its own answer is dropped; the rest of the body is not read."""
    app, driver = EchoApp(), Driver([b"a" * 60, b"b" * 60, b"c" * 60, b"d" * 60])
    await driver.run(app, [JSON])
    assert driver.status() == 413
    assert driver.json() == {
        "error": "payload_too_large",
        "detail": f"request body over {LIMIT} bytes",
    }
    assert driver.header(b"connection") == b"close"
    assert app.body == b"a" * 60
    assert app.disconnected
    assert driver.pulled == 2


async def test_transfer_encoding_overrides_a_small_content_length() -> None:
    """With both headers the body is framed as chunked: it is counted (and cut) even when
    the Content-Length is small and the body is not JSON."""
    app, driver = EchoApp(), Driver([b"a" * 60, b"b" * 60])
    headers = [(b"content-type", b"text/plain"), length(10), (b"transfer-encoding", b"chunked")]
    await driver.run(app, headers)
    assert driver.status() == 413
    assert app.body == b"a" * 60


@pytest.mark.parametrize("declared", [True, False])
async def test_body_up_to_the_limit_passes_unchanged(declared: bool) -> None:
    """A body of exactly the limit, in several chunks, reaches the app byte for byte."""
    chunks = [b'{"a": "' + b"x" * 40, b"y" * 40, b'z"}' + b" " * 10]
    body = b"".join(chunks)
    assert len(body) == LIMIT
    app, driver = EchoApp(), Driver(chunks)
    await driver.run(app, [JSON, *([length(LIMIT)] if declared else [])])
    assert driver.status() == 200
    assert app.body == body
    assert driver.sent[1]["body"] == body


async def test_over_limit_after_the_answer_started_closes_the_connection() -> None:
    """Too late for a 413: the app's later messages are dropped and RequestBodyTooLarge
    makes the server close the connection."""
    app, driver = EchoApp(answer_first=True), Driver([b"a" * 60, b"b" * 60])
    with pytest.raises(RequestBodyTooLarge, match="413 after the answer started"):
        await driver.run(app, [JSON])
    assert [m["type"] for m in driver.sent] == ["http.response.start"]
    assert app.body == b"a" * 60


async def test_non_http_scopes_pass_through() -> None:
    """Lifespan (and websocket) scopes reach the app untouched."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def nothing() -> Message:
        return {}

    async def drop(message: Message) -> None:
        pass

    await HttpEdge(app)({"type": "lifespan"}, nothing, drop)
    assert seen == ["lifespan"]


class Nested(BaseModel):
    ratio: float | None = None


class Floats(BaseModel):
    x: float = 0.0  # no bounds: NaN and Infinity would be taken silently
    nested: Nested | None = None
    xs: list[float] = []


def float_app() -> tuple[FastAPI, list[Floats]]:
    app = FastAPI()
    install_http_edge(app, max_body_bytes=LIMIT * 1000)
    taken: list[Floats] = []

    @app.post("/floats")
    async def floats(body: Floats) -> dict[str, str]:
        taken.append(body)
        return {"x": repr(body.x)}

    @app.get("/raise")
    async def raise_non_finite() -> None:
        raise RequestValidationError(
            [{"type": "x", "loc": ("query", "q"), "msg": "m", "input": [float("inf"), -1e999]}]
        )

    return app, taken


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    ("template", "loc"),
    [
        ('{"x": %s}', ["body", "x"]),
        ('{"nested": {"ratio": %s}}', ["body", "nested", "ratio"]),
        ('{"xs": [1, 2, %s]}', ["body", "xs", 2]),
    ],
)
async def test_non_finite_numbers_are_422_naming_the_field(
    literal: str, template: str, loc: list[Any]
) -> None:
    """NaN / Infinity / -Infinity in a JSON body → 422 finite_number at the value's path
    (was a 500, or taken silently by an unbounded float); the route never runs."""
    app, taken = float_app()
    async with client(app) as http:
        r = await http.post("/floats", content=template % literal, headers=dict([JSON]))
    assert r.status_code == 422, r.text
    assert r.json() == {
        "error": "invalid_request",
        "detail": [
            {"type": "finite_number", "loc": loc, "msg": "Input should be a finite number",
             "input": literal}
        ],
    }  # fmt: skip
    assert taken == []


async def test_literals_inside_strings_or_non_json_bodies_pass() -> None:
    """A "NaN" inside a JSON string is data; a text/plain body is not checked."""
    app, taken = float_app()
    async with client(app) as http:
        r = await http.post("/floats", content='{"x": 1.5, "note": "NaN Infinity"}',
                            headers=dict([JSON]))  # fmt: skip
        assert r.status_code == 200, r.text
        r = await http.post("/floats", json={"x": 2.5})
        assert (r.status_code, r.json()) == (200, {"x": "2.5"})
    assert [t.x for t in taken] == [1.5, 2.5]
    app2, driver = EchoApp(), Driver([b"NaN"])
    await driver.run(app2, [(b"content-type", b"text/plain"), length(3)])
    assert (driver.status(), app2.body) == (200, b"NaN")


async def test_literal_split_across_chunks_is_found() -> None:
    """A literal cut in two by chunk boundaries is still found; the last chunk is withheld."""
    app, driver = EchoApp(), Driver([b'{"x": [1, Infi', b"nity, 2, Na", b"N]}"])
    await driver.run(app, [JSON], limit=1000)
    assert driver.status() == 422
    assert [p["loc"] for p in driver.json()["detail"]] == [["body", "x", 1], ["body", "x", 3]]
    assert app.body == b'{"x": [1, Infinity, 2, Na'
    assert app.disconnected


def test_problems_are_capped_and_invalid_json_is_left_to_the_app() -> None:
    """At most ten values are named; one hidden past the walk's budget is at ["body"];
    literals in strings and bodies that are not JSON yield no problem here."""
    problems = non_finite_problems(b"[" + b",".join([b"NaN"] * 50) + b"]")
    assert [p["loc"] for p in problems] == [["body", i] for i in range(10)]
    far = non_finite_problems(b'{"xs": [' + b"0," * 200_000 + b"-Infinity]}")
    assert [(p["loc"], p["input"]) for p in far] == [(["body"], "-Infinity")]
    assert non_finite_problems(b'["NaN", "-Infinity"]') == []
    assert non_finite_problems(b'{"x": NaN') == []
    assert non_finite_problems(b'{"x": NaN, "y": nope}') == []
    assert non_finite_problems(b"NaN") == [
        {"type": "finite_number", "loc": ["body"], "msg": "Input should be a finite number",
         "input": "NaN"}
    ]  # fmt: skip


async def test_validation_errors_render_non_finite_inputs_as_strings() -> None:
    """A validation error whose input holds infinities is FastAPI's 422 body, not a 500."""
    app, _ = float_app()
    async with client(app) as http:
        r = await http.get("/raise")
    assert r.status_code == 422
    assert r.json()["detail"][0]["input"] == ["Infinity", "-Infinity"]
    assert r.json()["detail"][0]["loc"] == ["query", "q"]


async def test_installed_limit_answers_413_through_fastapi() -> None:
    """install_http_edge's limit applies to a FastAPI app; an unknown route too (before routing)."""
    app, taken = float_app()
    async with client(app) as http:
        big = b'{"x": 1' + b" " * (LIMIT * 1000) + b"}"
        for path in ("/floats", "/nowhere"):
            r = await http.post(path, content=big, headers=dict([JSON]))
            assert (r.status_code, r.headers["connection"]) == (413, "close")
            assert r.json() == {
                "error": "payload_too_large",
                "detail": f"request body over {LIMIT * 1000} bytes",
            }
    assert taken == []


def test_limit_comes_from_the_environment() -> None:
    """CAAS_HTTP_MAX_BODY_BYTES sets the limit (default 1 MiB); anything but a positive
    integer is refused at start."""
    assert configured_max_body_bytes({}) == DEFAULT_MAX_BODY_BYTES == 1_048_576
    assert configured_max_body_bytes({MAX_BODY_ENV: " 2048 "}) == 2048
    for bad in ("0", "-5", "1MB", "1e6"):
        with pytest.raises(ValueError, match=MAX_BODY_ENV):
            configured_max_body_bytes({MAX_BODY_ENV: bad})
    with pytest.raises(ValueError, match="positive"):
        install_http_edge(FastAPI(), max_body_bytes=0)


def test_every_server_keeps_idle_connections_longer_than_the_clients_do() -> None:
    """An idle keep-alive connection is closed by the client (httpx: after 5 s), never
    by the server first: a request sent as the server closes meets a closed socket."""
    assert httpx.Limits().keepalive_expiry is not None
    assert 2 * httpx.Limits().keepalive_expiry < SERVER_KEEP_ALIVE_S
    root = Path(__file__).resolve().parents[2]
    servers = []
    for package in ("gateway", "backend", "paysim", "vehicle_sim", "protocol"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and ast.unparse(node.func) in (
                    "uvicorn.run",
                    "uvicorn.Config",
                ):
                    keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                    servers.append((path.name, keywords.get("timeout_keep_alive")))
    assert sorted(name for name, _ in servers) == ["app.py", "http_edge.py"], servers
    assert all(value == "SERVER_KEEP_ALIVE_S" for _, value in servers), servers
    for entry in ("gateway/__main__.py", "backend/cli.py", "paysim/__main__.py"):
        calls = ast.walk(ast.parse((root / entry).read_text()))
        assert any(isinstance(c, ast.Call) and ast.unparse(c.func) == "serve" for c in calls)
