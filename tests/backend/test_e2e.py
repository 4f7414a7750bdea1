"""End to end: backend → real gateway (in-process, real Redis and Mosquitto) → fleet
simulator, and back through ``caas:events``. Successes are charged exactly once,
failures never charged and ticketed with the gateway's diagnostics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from backend.adapters.gateway_client import HttpGatewayClient
from gateway.api import create_app as gateway_app
from gateway.config import GatewaySettings
from gateway.service import Gateway
from launcher.stack import LocalStack
from protocol.topics import Topics
from tests.backend.conftest import World, WorldFactory
from tests.conftest import SimFactory
from vehicle_sim.fleet import Mode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

FAST = {
    "max_attempts": 2,
    "initial_backoff_s": 0.05,
    "backoff_multiplier": 2.0,
    "max_backoff_s": 0.5,
    "jitter_ratio": 0.1,
    "status_query_timeout_s": 0.5,
    "ack_timeout_s": 0.5,
    "ready_wait_s": 1.0,
    "outcome_wait_s": 1.0,
}


@asynccontextmanager
async def real_gateway(
    stack: LocalStack, topics: Topics, redis_url: str, policy: dict[str, Any] | None = None
) -> AsyncIterator[HttpGatewayClient]:
    """An in-process gateway worker and an HTTP client on its ASGI app."""
    token = stack.secrets["gateway_token"]
    values: dict[str, Any] = {f"retry_{k}": v for k, v in {**FAST, **(policy or {})}.items()}
    settings = GatewaySettings(
        mqtt_url=stack.broker.gateway_address().url(),
        redis_url=redis_url,
        gateway_token=token,
        gateway_share_group=stack.secrets["gateway_share_group"],
        signing_key=stack.private_key_path,
        topic_root=topics.root,
        gateway_lease_s=2,
        gateway_timer_poll_s=0.02,
        **values,
    )
    gateway = Gateway(settings.require())
    app = gateway_app(gateway, manage_lifespan=False)
    async with gateway.running():
        await gateway.bootstrapped.wait()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            yield HttpGatewayClient(client)
        finally:
            await client.aclose()


def paid_upfront(feature: str) -> dict[str, Any]:
    """A duration charged at activation (subscriptions are billed in arrears, issue 5)."""
    from backend.store.catalog import load_file

    entry = next(e for e in load_file() if e["id"] == feature)
    price = next(p for p in entry["prices"] if p["model"] != "subscription")
    return {"model": price["model"], **({"days": price["days"]} if "days" in price else {})}


async def wait_terminal(
    w: World, ids: list[str], timeout_s: float = 40.0
) -> dict[str, dict[str, Any]]:
    final = {"CHARGED", "CANCELLED"}  # the failures' holds released
    async with asyncio.timeout(timeout_s):
        while True:
            got = {i: await w.purchase(i) for i in ids}
            if all(p["payment"]["state"] in final for p in got.values()):
                return got
            await asyncio.sleep(0.1)


async def test_mixed_fleet_end_to_end(
    make_world: WorldFactory,
    make_sim: SimFactory,
    stack: LocalStack,
    topics: Topics,
    db_url: str,
    redis_url: str,
    plain_redis: object,
) -> None:
    """Online vehicles → ACTIVE/CHARGED once; conflict and timeout vehicles →
    FAILED_NO_CHARGE with a ticket carrying the gateway's diagnostics package."""
    mix = {Mode.ONLINE: 0.5, Mode.CONFLICT: 0.25, Mode.TIMEOUT: 0.25}
    async with make_sim(vehicles=4, mix=mix) as sim, real_gateway(stack, topics, redis_url) as gw:
        vins = [(s.vin, s.model) for s in sim.specs]
        async with make_world(db_url, redis_url=redis_url, gateway=gw, vins=vins) as w:
            async with w.backend.running():
                bought = {}
                for spec in sim.specs:
                    feature = spec.installed_features[0]
                    r = await w.buy(feature, vin=spec.vin, duration=paid_upfront(feature))
                    assert r.status_code == 202, r.text
                    bought[r.json()["id"]] = spec
                got = await wait_terminal(w, list(bought))
            for pid, spec in bought.items():
                p = got[pid]
                if spec.initial_mode is Mode.ONLINE:
                    assert (p["state"], p["payment"]["state"]) == ("ACTIVE", "CHARGED")
                    assert (
                        spec.installed_features[0] in sim.runtime.vehicle(spec.vin).active_features
                    )
                else:
                    assert (p["state"], p["payment"]["state"]) == ("FAILED_NO_CHARGE", "CANCELLED")
            tickets = (await w.api.get("/v1/ops/tickets", headers=w.as_(w.ops_token))).json()
            failed = [s for s in bought.values() if s.initial_mode is not Mode.ONLINE]
            assert len(tickets) == len(failed) == 2
            assert all(t["details"]["diagnostics"]["attempts"] for t in tickets)
            charged = sum(w.provider.real_captures.values())
            assert charged == sum(1 for s in bought.values() if s.initial_mode is Mode.ONLINE)
            # the handbook's metrics read the real gateway's outcomes and attempts
            summary = await w.api.get("/v1/ops/metrics/summary", headers=w.as_(w.ops_token))
            handbook = {m["key"]: m for m in summary.json()["handbook"]}
            failure = handbook["activation_failure_rate"]
            assert (failure["value"], failure["samples"]) == (0.5, 4)
            assert handbook["average_attempts_to_success"]["samples"] == 2
            by_attempt = summary.json()["breakdowns"]["successes_by_attempt"]
            assert sum(row["total"] for row in by_attempt) == 4  # every attempt count known
            await w.finish()
