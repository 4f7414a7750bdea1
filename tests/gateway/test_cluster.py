"""The gateway on a Redis Cluster: a master killed (SIGKILL) with activations in flight
loses none of them and none of their events; the events of a shard reach the one
events stream at once (the forwarder), in order."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.pipelining import AutoPipeline
from protocol.redis_connect import open_redis
from tests.conftest import SimFactory
from tests.gateway.conftest import GatewayFactory, Harness
from tests.gateway.test_crash import MIX, TERMINAL, TRIPS, submit_all, wait_all_terminal

pytestmark = [pytest.mark.integration, pytest.mark.serial]
CLUSTER_ONLY = pytest.mark.parametrize("gateway_redis", ["cluster"], indirect=True)


def lost_and_doubled(events: list[dict[str, Any]], ids: list[str]) -> tuple[list[str], list[str]]:
    """(activations missing their accepted or terminal event, activations with one of
    those twice under different event ids). A copy with the same event_id is no
    double: the backend's inbox drops it."""
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in events:
        kind = "end" if e["type"] in TERMINAL else e["type"]
        seen[(e["data"].get("activation_id", ""), kind)].add(e["event_id"])
    lost = [i for i in ids if not seen[(i, "activation.accepted")] or not seen[(i, "end")]]
    doubled = [i for i in ids if len(seen[(i, "activation.accepted")]) > 1
               or len(seen[(i, "end")]) > 1]  # fmt: skip
    return lost, doubled


def in_order(events: list[dict[str, Any]]) -> bool:
    """Each activation's accepted event comes before its terminal one."""
    accepted: set[str] = set()
    for e in events:
        activation_id = e["data"].get("activation_id", "")
        if e["type"] == "activation.accepted":
            accepted.add(activation_id)
        elif e["type"] in TERMINAL and activation_id not in accepted:
            return False
    return True


@CLUSTER_ONLY
@pytest.mark.timeout(120)
async def test_master_failover_loses_no_activation(
    make_gateway: GatewayFactory, make_sim: SimFactory
) -> None:
    """60 activations accepted (202), most of them waiting for driving vehicles to park;
    the master of the first vehicle's shard is SIGKILLed and its replica promoted: every
    activation SUCCEEDS, every one's accepted and terminal events are in the events
    stream (copies only with the same event_id), in order: 0 lost."""
    retry = {"max_attempts": 8, "ack_timeout_s": 1.0, "status_query_timeout_s": 1.0,
             "ready_wait_s": 8.0, "initial_backoff_s": 0.2}  # fmt: skip
    async with make_sim(vehicles=60, mix=MIX, behaviour=TRIPS) as sim, make_gateway(**retry) as gw:
        assert gw.gateway is not None
        cluster = gw.cluster_server
        assert cluster is not None
        features = {s.vin: s.installed_features[0] for s in sim.specs}
        vins = list(features)
        ids = await submit_all(gw, vins, features)
        assert isinstance(gw.redis, RedisCluster)
        keys = gw.gateway.keys
        port = gw.redis.get_node_from_key(keys.of_vin(vins[0]).timers).port
        master = next(node for node in cluster.masters() if node.port == port)
        on_master = [
            v for v in vins if gw.redis.get_node_from_key(keys.of_vin(v).timers).port == port
        ]
        stream: list[Any] = await gw.redis.xrange(gw.stream)  # type: ignore[assignment]
        ended = sum(1 for _, fields in stream if fields["type"] in TERMINAL)
        assert ended < len(ids) / 2, "the kill must come mid-flight"
        await asyncio.to_thread(cluster.kill_master, master)
        started = time.monotonic()
        try:
            await asyncio.to_thread(cluster.wait_for_failover, 15.0)
            promoted_after = time.monotonic() - started
            await wait_all_terminal(gw, ids, 60)
            finals = [await get_retrying(gw, i) for i in ids]
            events = await gw.events()
        finally:
            await asyncio.to_thread(cluster.restart, master)
        lost, doubled = lost_and_doubled(events, ids)
        states = {f["state"] for f in finals}
        print(
            f"failover: {len(ids)} activations, {len(on_master)} on the killed master's "
            f"shards, promoted after {promoted_after:.1f}s; states={states} lost={len(lost)} "
            f"doubled={len(doubled)} events={len(events)} "
            f"distinct={len({e['event_id'] for e in events})}"
        )
        assert on_master, "the killed master held some of the vehicles"
        assert lost == []
        assert doubled == []
        assert states == {"SUCCEEDED"}
        assert in_order(events)


async def get_retrying(gw: Harness, activation_id: str) -> dict[str, Any]:
    """GET, riding out the 503 a request meets while the cluster fails over."""
    for _ in range(100):
        response = await gw.client.get(f"/v1/activations/{activation_id}")
        if response.status_code == 200:
            return dict(response.json())
        assert response.status_code == 503, response.text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{activation_id}: no answer")


@pytest.mark.timeout(60)
async def test_accept_to_event_latency(make_gateway: GatewayFactory) -> None:
    """From the POST to its activation.accepted in the events stream, one at a time: on
    a cluster the worker that wrote the outbox forwards it at once (it holds every
    shard's lease here), so the event is in the stream about when the 202 is."""
    async with make_gateway() as gw:
        latencies = []
        for n in range(60):
            started = time.monotonic()
            created = await gw.activate(f"WVWZZZ1JZLAT{n:05d}", "climate_plus")
            activation_id = created["activation_id"]
            await gw.wait_event(
                lambda e, a=activation_id: (
                    e["type"] == "activation.accepted" and e["data"]["activation_id"] == a
                ),
                5.0,
            )
            latencies.append(time.monotonic() - started)
        p50, worst = statistics.median(latencies), max(latencies)
        print(f"accept→event ({'cluster' if gw.cluster else 'standalone'}): "
              f"p50={p50 * 1000:.1f}ms max={worst * 1000:.1f}ms")  # fmt: skip
        assert p50 < 0.2 and worst < 3.0  # a few WAITs of 0.5 s if a replica lags


async def test_auto_pipeline_reloads_scripts_the_masters_lost(redis_cluster: Any) -> None:
    """Scripts are not replicated: a promoted replica has none cached. An auto-pipelined
    call meeting NOSCRIPT is sent again as EVAL to its keys' node only (which caches it
    there: the next call's EVALSHA finds it); calls of one batch on several masters
    each get their own result."""
    client = await open_redis(redis_cluster.url(), decode_responses=True)
    assert isinstance(client, RedisCluster)
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    pipeline = AutoPipeline(client)
    keys = [f"{{test-noscript:{i}}}:n" for i in range(8)]  # on several masters
    try:
        await client.delete(*keys)
        first = await asyncio.gather(*(pipeline.run(script, keys=[k], args=[]) for k in keys))
        for node in client.get_primaries():  # as if every master had just been promoted
            await client.execute_command("SCRIPT FLUSH", target_nodes=node)
        again = await asyncio.gather(*(pipeline.run(script, keys=[k], args=[]) for k in keys))
        assert (first, again) == ([1] * 8, [2] * 8)
        nodes = {client.get_node_from_key(k).name: client.get_node_from_key(k) for k in keys}
        assert len(nodes) >= 2
        for node in nodes.values():
            cached = await client.execute_command("SCRIPT EXISTS", script.sha, target_nodes=node)
            assert cached in ([1], [True], 1, True), (node.name, cached)
    finally:
        await pipeline.aclose()
        await client.aclose()
