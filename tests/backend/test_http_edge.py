"""The backend's HTTP edge (protocol/http_edge.py): NaN / Infinity in a body → 422,
a body over the limit → 413 before authentication; webhooks still pass."""

from __future__ import annotations

import json

import pytest

from tests.backend.conftest import VINS, World
from tests.backend.test_payments import signed

pytestmark = pytest.mark.timeout(30)


def purchase_body(world: World, days: str) -> str:
    """A temporary purchase whose ``duration.days`` is the literal ``days``."""
    body = {"vehicle_id": world.alice.vehicles[VINS[0][0]], "service_id": "climate_plus",
            "duration": {"model": "temporary", "days": "@"}}  # fmt: skip
    return json.dumps(body).replace('"@"', days)


async def test_non_finite_numbers_in_a_purchase_are_422_naming_the_field(world: World) -> None:
    """NaN, ±Infinity as duration.days → 422 at that path (was 500); nothing bought."""
    headers = {**world.as_(world.alice), "Idempotency-Key": "k1",
               "Content-Type": "application/json"}  # fmt: skip
    for literal in ("NaN", "Infinity", "-Infinity"):
        r = await world.api.post(
            "/v1/purchases", content=purchase_body(world, literal), headers=headers
        )
        assert r.status_code == 422, r.text
        (problem,) = r.json()["detail"]
        assert problem["loc"] == ["body", "duration", "days"]
        assert (problem["type"], problem["input"]) == ("finite_number", literal)
    r = await world.api.get("/v1/customers/me/expediente", headers=world.as_(world.alice))
    assert r.json()["purchases"] == []
    r = await world.api.post("/v1/purchases", content=purchase_body(world, "30"), headers=headers)
    assert r.status_code == 202, r.text


async def test_body_over_the_limit_is_413_before_authentication(world: World) -> None:
    """Unauthenticated 1 MiB + 1 bodies → 413 on a customer route and on the webhook;
    a signed webhook and an authenticated request still work."""
    big = b'{"x": "' + b"x" * (1_048_576 - 8) + b'"}'
    assert len(big) == 1_048_576 + 1
    for path in ("/v1/purchases", "/v1/payments/webhooks"):
        r = await world.api.post(path, content=big, headers={"Content-Type": "application/json"})
        assert (r.status_code, r.headers["connection"]) == (413, "close")
        assert r.json() == {
            "error": "payload_too_large",
            "detail": "request body over 1048576 bytes",
        }
    event = {"event_id": "w1", "type": "capture.settled", "reference": "x", "seq": 2}
    raw, headers = signed(event, world.clock.now())
    r = await world.api.post("/v1/payments/webhooks", content=raw, headers=headers)
    assert (r.status_code, r.json()["outcome"]) == (200, "ignored")
    r = await world.api.get("/v1/vehicles", headers=world.as_(world.alice))
    assert r.status_code == 200
