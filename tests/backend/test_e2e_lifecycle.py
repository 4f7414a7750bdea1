"""End to end: a temporary service expires and is switched off through the real gateway
and the fleet simulator (``action: deactivate`` on the wire), then DEACTIVATED."""

from __future__ import annotations

import asyncio

import pytest

from launcher.stack import LocalStack
from protocol.topics import Topics
from tests.backend.conftest import World, WorldFactory
from tests.backend.test_e2e import real_gateway
from tests.conftest import SimFactory
from vehicle_sim.fleet import Mode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
# an online vehicle must not fail for want of time when the CPU is busy
PATIENT = {"max_attempts": 4, "ack_timeout_s": 3.0, "status_query_timeout_s": 2.0}


async def wait_state(w: World, pid: str, state: str, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            got = await w.purchase(pid)
            if got["state"] == state:
                return
            assert got["state"] not in ("FAILED_NO_CHARGE", "ESCALATED"), got
            assert got["deactivation_state"] != "FAILED", got
            await asyncio.sleep(0.05)


async def test_expiry_deactivates_through_gateway_and_vehicle(
    make_world: WorldFactory,
    make_sim: SimFactory,
    stack: LocalStack,
    topics: Topics,
    db_url: str,
    redis_url: str,
    plain_redis: object,
) -> None:
    """ACTIVE on the vehicle → clock past expiry → the vehicle no longer has the feature."""
    async with (
        make_sim(vehicles=1, mix={Mode.ONLINE: 1.0}) as sim,
        real_gateway(stack, topics, redis_url, PATIENT) as gw,
    ):
        spec = sim.specs[0]
        async with make_world(
            db_url, redis_url=redis_url, gateway=gw, vins=[(spec.vin, spec.model)]
        ) as w:
            from backend.store.catalog import load_file

            feature = next(
                e["id"] for e in load_file()
                if e["id"] in spec.installed_features
                and any(p["model"] == "temporary" for p in e["prices"])
            )  # fmt: skip
            entry = next(e for e in load_file() if e["id"] == feature)
            days = next(p["days"] for p in entry["prices"] if p["model"] == "temporary")
            async with w.backend.running():
                r = await w.buy(
                    feature, vin=spec.vin, duration={"model": "temporary", "days": days}
                )
                assert r.status_code == 202, r.text
                pid = r.json()["id"]
                await wait_state(w, pid, "ACTIVE")
                assert feature in sim.runtime.vehicle(spec.vin).active_features
                w.clock.advance(days * 86_400.0 + 1)
                await wait_state(w, pid, "DEACTIVATED")
            assert feature not in sim.runtime.vehicle(spec.vin).active_features
            got = await w.purchase(pid)
            assert got["deactivation_state"] == "SUCCEEDED"
            assert got["payment"]["captured_cents"] == got["price_cents"]
            await w.finish()
