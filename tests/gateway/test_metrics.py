"""The gateway's /metrics across workers: the Redis gauges come from exactly one worker
(the exporter lease) and move to another when it dies; the MQTT session gauge; the
process metrics; and no label carrying a VIN or an id, however many vehicles."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from launcher.stack import LocalStack
from protocol.models import VIN_RE
from protocol.topics import Topics
from tests.conftest import SimFactory
from tests.gateway.conftest import GatewayFactory, Harness
from tests.gateway.test_list import OFFLINE, WAIT, until_quiet
from tests.gateway.test_workers import two_workers
from tests.helpers import eventually, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
STORE_GAUGES = (
    "caas_gateway_activation_states",
    "caas_gateway_in_flight",
    "caas_gateway_scheduled_timers",
    "caas_gateway_leased_timers",
)
ID_LIKE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|^act-|^reconcile-")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) → value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def store_gauges(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {k: v for k, v in samples(text).items() if k[0] in STORE_GAUGES}


async def truth(client: httpx.AsyncClient, harness: Harness) -> dict[Any, float]:
    """What the gauges must sum to: counts from the list route and the timer sets."""
    expected: dict[Any, float] = {}
    for state in ("QUEUED", "WAITING_VEHICLE", "IN_PROGRESS", "RETRY_SCHEDULED",
                  "SUCCEEDED", "FAILED", "CANCELLED"):  # fmt: skip
        page = await client.get("/v1/activations", params={"state": state, "limit": 1})
        n = float(page.headers["X-Total-Count"])
        expected[("caas_gateway_activation_states", (("state", state),))] = n
    expected[("caas_gateway_in_flight", ())] = expected[
        ("caas_gateway_activation_states", (("state", "IN_PROGRESS"),))
    ]
    expected[("caas_gateway_scheduled_timers", ())] = float(
        await harness.redis.zcard("caas:gw:timers")
    )
    expected[("caas_gateway_leased_timers", ())] = float(
        await harness.redis.zcard("caas:gw:leases")
    )
    return expected


@pytest.mark.timeout(120)
async def test_one_worker_exports_the_redis_gauges_and_another_takes_over(
    stack: LocalStack, topics: Topics, redis_db: int, make_sim: SimFactory, tmp_path: Path
) -> None:
    """Two worker processes: summing both scrapes gives the true counts (the gauges come
    from one worker only, the same one scrape after scrape); SIGKILL that worker and the
    other exports them within the lease (1 s here), with the same true counts."""
    extra = {"CAAS_GATEWAY_GAUGE_LEASE_S": "1"}
    async with (
        make_sim(vehicles=3) as sim,
        two_workers(stack, topics, redis_db, tmp_path, {}, **extra) as gw,
    ):
        for i, spec in enumerate(sim.specs):
            body = {"activation_id": f"ok-{i}", "vin": spec.vin, "action": "activate",
                    "feature": spec.installed_features[0]}  # fmt: skip
            assert (await gw.clients[i % 2].post("/v1/activations", json=body)).status_code == 202
            await gw.harness.wait_terminal(f"ok-{i}")
        for i in range(5):
            body = {"activation_id": f"wait-{i}", "vin": OFFLINE[i], "action": "activate",
                    "feature": "climate_plus", "policy": WAIT}  # fmt: skip
            assert (await gw.clients[i % 2].post("/v1/activations", json=body)).status_code == 202
        await until_quiet(gw.harness)
        expected = await truth(gw.clients[1], gw.harness)
        assert expected[("caas_gateway_activation_states", (("state", "SUCCEEDED"),))] == 3
        holders = []
        for _ in range(3):
            scrapes = [(await client.get("/metrics")).text for client in gw.clients]
            exporting = [i for i, text in enumerate(scrapes) if store_gauges(text)]
            assert len(exporting) == 1, "exactly one worker exports the Redis gauges"
            summed: Counter[Any] = Counter()
            for text in scrapes:
                summed.update(store_gauges(text))
            assert dict(summed) == expected
            holders.append(exporting[0])
            await asyncio.sleep(0.7)  # past half the lease: the holder renews, keeps it
        assert len(set(holders)) == 1, holders
        holder, survivor = holders[0], 1 - holders[0]
        gw.workers[holder].kill()
        killed_at = time.monotonic()

        async def survivor_exports() -> bool:
            return bool(store_gauges((await gw.clients[survivor].get("/metrics")).text))

        await eventually(survivor_exports, 5)
        assert time.monotonic() - killed_at < 3, "within the lease plus a renewal"
        text = (await gw.clients[survivor].get("/metrics")).text
        assert store_gauges(text) == await truth(gw.clients[survivor], gw.harness)


async def test_mqtt_connected_follows_the_broker(
    make_gateway: GatewayFactory, stack: LocalStack
) -> None:
    """caas_gateway_mqtt_connected is 1 while the worker's MQTT session is up, 0 while
    the broker is down, 1 again after it is back; process metrics are there too."""

    async def connected() -> float:
        text = (await gw.client.get("/metrics")).text
        return samples(text)[("caas_gateway_mqtt_connected", ())]

    async with make_gateway() as gw:
        assert gw.gateway is not None
        text = (await gw.client.get("/metrics")).text
        assert "process_cpu_seconds_total" in text and "python_info" in text
        assert "python_gc_collections_total" in text
        assert await connected() == 1.0
        await asyncio.to_thread(stack.broker.kill)
        try:
            await wait_until(lambda: gw.gateway is not None and not gw.gateway.dispatcher.connected)
            assert await connected() == 0.0
        finally:
            await asyncio.to_thread(stack.broker.start)

        async def back() -> bool:
            return await connected() == 1.0

        await eventually(back, 20)


@pytest.mark.timeout(60)
async def test_no_label_carries_a_vin_or_an_id(
    make_gateway: GatewayFactory, make_sim: SimFactory
) -> None:
    """40 vehicles with activations that succeed, fail (feature not installed) and wait,
    on 20 more that are offline: no VIN, activation id or command id in /metrics."""
    async with make_sim(vehicles=40) as sim, make_gateway() as gw:
        created = []
        for spec in sim.specs:
            feature = spec.installed_features[0] if len(created) % 3 else "not_on_this_car"
            created.append(await gw.activate(spec.vin, feature))
        offline = [f"CAATR1234SB0009{i:02d}" for i in range(20)]
        created += [await gw.activate(vin, "climate_plus", policy=WAIT) for vin in offline]
        for act in created[:40]:
            await gw.wait_terminal(act["activation_id"], 20)
        text = (await gw.client.get("/metrics")).text
        vins = {spec.vin for spec in sim.specs} | set(offline)
        ids = {a["activation_id"] for a in created}
        finals = [await gw.get(a["activation_id"]) for a in created[:40]]
        ids |= {at["command_id"] for f in finals for at in f["attempts"] if at["command_id"]}
        assert {f["state"] for f in finals} == {"SUCCEEDED", "FAILED"}
        for needle in vins | ids:
            assert needle not in text
        values = {v for (_, labels) in samples(text) for _, v in labels}
        assert not [v for v in values if VIN_RE.match(v) or ID_LIKE.search(v)]
        assert len(values) < 200, "label values stay a small fixed vocabulary"
