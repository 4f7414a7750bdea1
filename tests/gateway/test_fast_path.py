"""The plain route for a well-formed POST /v1/activations (gateway/fast_path.py): it
answers exactly what the FastAPI route answers, and hands everything else to it."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from gateway.activation import Activation
from gateway.api import create_app
from gateway.errors import ActivationConflict
from gateway.fast_path import FastCreate
from gateway.policy import RetryPolicy

TOKEN = "fast-path-token"
BODY = {"activation_id": "a-1", "vin": "CAATR1234SB000901", "feature": "climate_plus",
        "action": "activate"}  # fmt: skip


class Engine:
    """Creates at once (or says the id exists with another body); records what it got."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.known: set[str] = set()

    async def create(self, **kw: Any) -> tuple[Activation, bool]:
        self.calls.append(kw)
        if kw["activation_id"] == "reused":
            raise ActivationConflict("reused")
        created = kw["activation_id"] not in self.known
        self.known.add(kw["activation_id"])
        act = Activation(kw["activation_id"], kw["vin"], kw["feature"], kw["action"],
                         kw["policy"], 1.7e9, 1.7e9, due_at=1.7e9)  # fmt: skip
        return act, created


class Counted:
    """The FastAPI route (the plain route's fallback), counting the requests it gets."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.requests += 1
        await self.app(scope, receive, send)


def build(fast: bool) -> tuple[httpx.AsyncClient, Engine, Counted | None]:
    engine = Engine()
    gateway = SimpleNamespace(cfg=SimpleNamespace(token=TOKEN, policy=RetryPolicy()),
                              engine=engine)  # fmt: skip
    app = create_app(cast(Any, gateway), manage_lifespan=False)
    first = app.router.routes[0]
    endpoint = getattr(first, "endpoint", None)
    assert isinstance(endpoint, FastCreate), "the plain route must be tried first"
    counted = None
    if fast:
        counted = endpoint.fallback = Counted(endpoint.fallback)
    else:
        app.router.routes.pop(0)  # the FastAPI route alone: what it answered before
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )  # fmt: skip
    return client, engine, counted


async def both(method: str, **kw: Any) -> tuple[httpx.Response, httpx.Response, Counted]:
    """The same request to the app with the plain route and to the FastAPI route alone."""
    fast_client, fast_engine, counted = build(fast=True)
    plain_client, plain_engine, _ = build(fast=False)
    async with fast_client, plain_client:
        fast = await fast_client.request(method, "/v1/activations", **kw)
        framework = await plain_client.request(method, "/v1/activations", **kw)
    assert fast_engine.calls == plain_engine.calls  # the same activation, the same body hash
    assert counted is not None
    return fast, framework, counted


async def test_a_well_formed_request_is_answered_by_the_plain_route_identically() -> None:
    policy = {**BODY, "policy": {"max_attempts": 3, "jitter_ratio": 0.0}}
    for body in (BODY, policy):
        fast, framework, counted = await both("POST", json=body)
        assert counted.requests == 0
        assert (fast.status_code, fast.content) == (framework.status_code, framework.content)
        assert fast.status_code == 202
        assert fast.headers["content-type"] == framework.headers["content-type"]
        assert json.loads(fast.content)["policy"]["max_attempts"] == (3 if body is policy else 5)


async def test_the_same_request_again_is_a_200_on_the_plain_route() -> None:
    client, engine, counted = build(fast=True)
    async with client:
        first = await client.post("/v1/activations", json=BODY)
        again = await client.post("/v1/activations", json=BODY)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json() == again.json()
    assert counted is not None and counted.requests == 0
    assert len(engine.calls) == 2


@pytest.mark.parametrize(
    ("case", "kw"),
    [
        ("no token", {"json": BODY, "headers": {"Authorization": ""}}),
        ("wrong token", {"json": BODY, "headers": {"Authorization": "Bearer nope"}}),
        ("lower-case scheme", {"json": BODY, "headers": {"Authorization": f"bearer {TOKEN}"}}),
        ("not JSON", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
        ("text/plain", {"content": json.dumps(BODY), "headers": {"Content-Type": "text/plain"}}),
        ("no body", {}),
        ("bad vin", {"json": {**BODY, "vin": "short"}}),
        ("unknown field", {"json": {**BODY, "extra": 1}}),
        ("bad policy", {"json": {**BODY, "policy": {"max_attempts": 0}}}),
        ("wrong action", {"json": {**BODY, "action": "toggle"}}),
    ],
)
async def test_anything_else_gets_the_fastapi_routes_answer(case: str, kw: dict[str, Any]) -> None:
    fast, framework, counted = await both("POST", **kw)
    assert counted.requests == 1, case
    assert (fast.status_code, fast.json()) == (framework.status_code, framework.json()), case
    assert fast.status_code in (202, 401, 422), case
    assert fast.headers.get("www-authenticate") == framework.headers.get("www-authenticate")


async def test_errors_of_a_well_formed_request_keep_their_shape() -> None:
    fast, framework, counted = await both("POST", json={**BODY, "activation_id": "reused"})
    assert counted.requests == 0
    assert fast.status_code == framework.status_code == 409
    assert fast.json() == framework.json()
    assert fast.json()["error"] == "activation_id_reused"


async def test_other_methods_and_the_schema_are_the_fastapi_routes() -> None:
    client, _, counted = build(fast=True)
    async with client:
        listed = await client.put("/v1/activations", json=BODY)
        schema = (await client.get("/openapi.json")).json()
    assert listed.status_code == 405
    assert "post" in schema["paths"]["/v1/activations"]
    assert schema["paths"]["/v1/activations"]["post"]["requestBody"]["content"]
    assert counted is not None and counted.requests == 0
