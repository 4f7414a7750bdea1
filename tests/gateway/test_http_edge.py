"""The gateway's HTTP edge (protocol/http_edge.py): NaN / Infinity in a policy → 422,
a body over the limit → 413 before authentication."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.gateway.conftest import GatewayFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
VIN = "CAATR1234SB000901"


def raw_body(policy_value: str) -> str:
    """An activation body whose policy.jitter_ratio is the literal ``policy_value``."""
    body = {"activation_id": str(uuid.uuid4()), "vin": VIN, "feature": "climate_plus",
            "action": "activate", "policy": {"jitter_ratio": "@"}}  # fmt: skip
    return json.dumps(body).replace('"@"', policy_value)


async def test_non_finite_policy_numbers_are_422_naming_the_field(
    make_gateway: GatewayFactory,
) -> None:
    """NaN, ±Infinity as policy.jitter_ratio → 422 at that path (was 500); nothing stored."""
    async with make_gateway() as gw:
        for literal in ("NaN", "Infinity", "-Infinity"):
            r = await gw.client.post(
                "/v1/activations",
                content=raw_body(literal),
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 422, r.text
            (problem,) = r.json()["detail"]
            assert problem["loc"] == ["body", "policy", "jitter_ratio"]
            assert (problem["type"], problem["input"]) == ("finite_number", literal)
        assert await gw.events() == []
        ok = await gw.client.post(
            "/v1/activations",
            content=raw_body("0.25"),
            headers={"Content-Type": "application/json"},
        )
        assert ok.status_code == 202, ok.text
        assert ok.json()["policy"]["jitter_ratio"] == 0.25


async def test_body_over_the_limit_is_413_before_authentication(
    make_gateway: GatewayFactory,
) -> None:
    """An unauthenticated 1 MiB + 1 body → 413 (not 401); a normal request still works."""
    async with make_gateway() as gw:
        big = b'{"vin": "' + b"x" * (1_048_576 - 10) + b'"}'
        assert len(big) == 1_048_576 + 1
        r = await gw.client.post(
            "/v1/activations",
            content=big,
            headers={"Authorization": "", "Content-Type": "application/json"},
        )
        assert (r.status_code, r.headers["connection"]) == (413, "close")
        assert r.json() == {
            "error": "payload_too_large",
            "detail": "request body over 1048576 bytes",
        }
        assert await gw.events() == []
        ok = await gw.client.post(
            "/v1/activations", content=raw_body("0.1"), headers={"Content-Type": "application/json"}
        )
        assert ok.status_code == 202, ok.text
