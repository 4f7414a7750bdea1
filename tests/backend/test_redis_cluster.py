"""The backend on a Redis Cluster: CAAS_REDIS_URL names one node, open_redis tells a
cluster from a standalone server, the events consumer reads the stream from the
cluster, and keeps going when the master holding the stream dies and its replica is
promoted, with every acknowledged entry still there."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from launcher.redis_cluster import RedisClusterServer
from launcher.stack import LocalStack
from protocol.probes import wait_for_redis
from protocol.redis_connect import open_redis
from protocol.settings import ConfigError
from tests.backend.conftest import VINS, World, WorldFactory
from tests.backend.test_integration import eventually, states
from tests.backend.test_purchase_saga import bought

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60), pytest.mark.serial]


@pytest.fixture
async def cluster_client(redis_cluster: RedisClusterServer) -> AsyncIterator[RedisCluster]:
    client = await open_redis(redis_cluster.url(), decode_responses=True)
    assert isinstance(client, RedisCluster)
    yield client
    await client.aclose()


async def test_open_redis_tells_a_cluster_from_a_standalone_server(
    redis_cluster: RedisClusterServer, stack: LocalStack
) -> None:
    assert stack.redis is not None
    standalone = await open_redis(stack.redis.url(7), max_connections=4, pool_timeout=1.0)
    clustered = await open_redis(redis_cluster.url(redis_cluster.nodes()[-1]))  # a replica
    try:
        assert type(standalone) is aioredis.Redis
        assert isinstance(standalone.connection_pool, aioredis.BlockingConnectionPool)
        assert isinstance(clustered, RedisCluster)
        keys = [f"k{i}:{uuid.uuid4().hex}" for i in range(20)]  # slots of every master
        for key in keys:
            await clustered.set(key, key)
        assert [await clustered.get(k) for k in keys] == [k.encode() for k in keys]
    finally:
        await standalone.aclose()
        await clustered.aclose()


async def test_a_cluster_url_with_a_db_is_refused(redis_cluster: RedisClusterServer) -> None:
    url = redis_cluster.url().removesuffix("/0") + "/3"
    with pytest.raises(ConfigError) as opened:
        await open_redis(url)
    with pytest.raises(ConfigError) as probed:
        await wait_for_redis(url, "CAAS_REDIS_URL", 2.0)
    assert opened.value.setting == probed.value.setting == "CAAS_REDIS_URL"
    assert "db 3" in str(opened.value)
    await wait_for_redis(redis_cluster.url(), "CAAS_REDIS_URL", 2.0)  # db 0: ready


async def charged(w: World, purchase: dict[str, Any]) -> None:
    async def done() -> bool:
        return (await states(w, purchase["id"]))[1] == "CHARGED"

    await eventually(done)


async def test_backend_consumes_events_from_a_cluster(
    make_world: WorldFactory, redis_cluster: RedisClusterServer, cluster_client: RedisCluster
) -> None:
    stream = f"caas:events:{uuid.uuid4().hex}"
    async with make_world(redis_url=redis_cluster.url(), events_stream=stream) as w:
        assert isinstance(w.backend.redis, RedisCluster)
        w.gateway.redis, w.gateway.stream = cluster_client, stream
        w.gateway.default_outcome = "succeeded"
        async with w.backend.running():
            await charged(w, await bought(w))
        assert (await cluster_client.xpending(stream, "backend"))["pending"] == 0
        await w.finish()


async def test_consumer_survives_a_failover_of_the_streams_master(
    make_world: WorldFactory, redis_cluster: RedisClusterServer, cluster_client: RedisCluster
) -> None:
    """The master holding the stream is SIGKILLed while the consumer runs: once its
    replica is promoted the same clients carry on, the entries written and acknowledged
    before are all there and none is pending or applied twice."""
    stream = f"caas:events:{uuid.uuid4().hex}"
    async with make_world(redis_url=redis_cluster.url(), events_stream=stream) as w:
        w.gateway.redis, w.gateway.stream = cluster_client, stream
        w.gateway.default_outcome = "succeeded"
        async with w.backend.running():
            first = await bought(w)
            await charged(w, first)
            old = redis_cluster.master_of_key(stream)
            await asyncio.to_thread(redis_cluster.wait_replicated, old)
            redis_cluster.kill_master(old)
            try:
                promoted = await asyncio.to_thread(redis_cluster.wait_for_failover, 15.0)
                assert redis_cluster.master_of_key(stream) is promoted
                second = await bought(w, vin=VINS[1][0])
                await charged(w, second)
            finally:
                await asyncio.to_thread(redis_cluster.restart, old)  # a replica again
        assert await cluster_client.xlen(stream) == 4  # accepted + succeeded, twice
        assert (await cluster_client.xpending(stream, "backend"))["pending"] == 0
        assert await states(w, first["id"]) == ("ACTIVE", "CHARGED")
        assert sum(w.provider.real_captures.values()) == 2
        await w.finish()
