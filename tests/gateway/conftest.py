"""Gateway fixtures: a Redis db per test, fast retry policies, an in-process gateway
worker on the session stack, and helpers that wait on the event stream (XREAD BLOCK).

Every test that takes ``gateway_redis`` (``make_gateway`` does) runs twice: on the
session stack's single Redis (a db of its own) and on the session's Redis Cluster
(db 0 only: flushed at the start of each test; tests run one at a time). The cluster
half adds 2m39s to the directory's 2m42s on the single Redis (2 shared cores). A test marked
``standalone_only`` (it restarts the single Redis, or edits its keys by name) is
skipped on the cluster."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.api import create_app
from gateway.config import GatewaySettings, ResolvedSettings
from gateway.keys import Keys
from gateway.retry import TRANSIENT
from gateway.service import Gateway
from launcher.redis_cluster import RedisClusterServer
from launcher.stack import LocalStack
from protocol.redis_connect import AnyRedis, open_redis
from protocol.topics import Topics

_dbs = itertools.count(1)
FAST_POLICY = {
    "max_attempts": 3,
    "initial_backoff_s": 0.05,
    "backoff_multiplier": 2.0,
    "max_backoff_s": 1.0,
    "jitter_ratio": 0.1,
    "status_query_timeout_s": 1.0,
    "ack_timeout_s": 1.0,
    "ready_wait_s": 2.0,
    "outcome_wait_s": 2.0,
}


def next_db() -> int:
    return 1 + (next(_dbs) - 1) % 60


@pytest.fixture
def redis_db() -> int:
    return next_db()


@dataclass(frozen=True)
class RedisTarget:
    """Where a test's gateway keeps its state: ``url`` is CAAS_REDIS_URL."""

    mode: str  # standalone | cluster
    url: str
    cluster: RedisClusterServer | None = None


@pytest.fixture(params=["standalone", "cluster"])
def gateway_redis(request: pytest.FixtureRequest, stack: LocalStack, redis_db: int) -> RedisTarget:
    """Where the test's gateway keeps its state; a test may choose one mode with
    ``parametrize("gateway_redis", [...], indirect=True)``."""
    if request.param == "standalone":
        assert stack.redis is not None
        return RedisTarget("standalone", stack.redis.url(redis_db))
    if request.node.get_closest_marker("standalone_only"):
        pytest.skip("restarts or edits the single Redis")
    cluster: RedisClusterServer = request.getfixturevalue("redis_cluster")
    replicas_in_sync(cluster)
    return RedisTarget("cluster", cluster.url(), cluster)


def replicas_in_sync(cluster: RedisClusterServer, timeout_s: float = 20.0) -> None:
    """Until every master has a replica online (after the cluster's start, or a node's
    restart, the first sync takes a few seconds: redis.conf's diskless sync delay;
    until then a WAIT for it times out)."""
    deadline = time.monotonic() + timeout_s
    for master in cluster.masters():
        while not any(
            isinstance(v, dict) and v.get("state") == "online"
            for k, v in master.ask("INFO", "replication").items()
            if k.startswith("slave")
        ):
            assert time.monotonic() < deadline, f"no replica of {master} in sync"
            time.sleep(0.05)


async def open_clean(target: RedisTarget) -> AnyRedis:
    """A client of the test's Redis, emptied (every master of a cluster)."""
    client = await open_redis(target.url, decode_responses=True)
    await client.flushdb()
    return client


def settings_env(
    stack: LocalStack, topics: Topics, db: int | RedisTarget, **retry: float
) -> dict[str, str]:
    """The environment a gateway worker of this test runs with (``db``: a db of the
    stack's Redis, or the test's ``gateway_redis``)."""
    url = db.url if isinstance(db, RedisTarget) else stack.redis.url(db) if stack.redis else ""
    env = {
        "CAAS_MQTT_URL": stack.broker.gateway_address().url(),
        "CAAS_REDIS_URL": url,
        "CAAS_GATEWAY_TOKEN": stack.secrets["gateway_token"],
        "CAAS_GATEWAY_SHARE_GROUP": stack.secrets["gateway_share_group"],
        "CAAS_SIGNING_KEY": str(stack.private_key_path),
        "CAAS_TOPIC_ROOT": topics.root,
        "CAAS_GATEWAY_LEASE_S": "2",
        "CAAS_GATEWAY_TIMER_POLL_S": "0.02",
    }
    for name, value in {**FAST_POLICY, **retry}.items():
        env[f"CAAS_RETRY_{name.upper()}"] = str(value)
    return env


def resolved(env: dict[str, str]) -> ResolvedSettings:
    names = {k.removeprefix("CAAS_").lower(): v for k, v in env.items()}
    return GatewaySettings(**names).require()  # type: ignore[arg-type]


@dataclass
class Harness:
    gateway: Gateway | None
    client: httpx.AsyncClient
    redis: AnyRedis
    stream: str
    cluster_server: RedisClusterServer | None = None  # the cluster's processes, if one

    @property
    def cluster(self) -> bool:
        return isinstance(self.redis, RedisCluster)

    def shards(self) -> list[Keys]:
        """The keys of every shard of the running gateway (one on a single Redis)."""
        keys = self.gateway.keys if self.gateway else Keys()
        return keys.all_shards()

    async def activate(self, vin: str, feature: str, **body: Any) -> dict[str, Any]:
        payload = {
            "activation_id": body.pop("activation_id", str(uuid.uuid4())),
            "vin": vin,
            "feature": feature,
            "action": body.pop("action", "activate"),
            **body,
        }
        response = await self.client.post("/v1/activations", json=payload)
        assert response.status_code == 202, response.text
        return dict(response.json())

    async def get(self, activation_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/activations/{activation_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def forwarded(self, timeout_s: float = 10.0) -> None:
        """On a cluster: until every shard's outbox is copied to the events stream (the
        forwarder runs beside the scripts); at once on a single Redis."""
        deadline = _now() + timeout_s
        for k in self.shards() if self.cluster else []:
            while True:
                cursor = await self.redis.get(k.forwarded) or "0-0"
                if not await self.redis.xrange(k.outbox, f"({cursor}", "+", count=1):
                    break
                assert _now() < deadline, f"{k.outbox} not forwarded in {timeout_s}s"
                await asyncio.sleep(0.01)

    async def events(self) -> list[dict[str, Any]]:
        """The events stream, once every event written so far is in it."""
        await self.forwarded()
        entries: list[tuple[str, dict[str, str]]] = await self.redis.xrange(self.stream)  # type: ignore[assignment]
        return [_event(fields) for _, fields in entries]

    async def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Block on the stream until an event matches (from the start of the stream)."""
        last = "0-0"
        deadline = _now() + timeout_s
        while (left := deadline - _now()) > 0:
            try:
                block_ms = int(min(left, 1.0) * 1000) + 1
                read: list[Any] = await self.redis.xread({self.stream: last}, block=block_ms)  # type: ignore[assignment]
            except TRANSIENT:
                await asyncio.sleep(0.1)  # Redis restarting (or failing over) under the test
                continue
            for _, entries in read:
                for entry_id, fields in entries:
                    last = entry_id
                    event = _event(fields)
                    if predicate(event):
                        return event
        raise AssertionError(f"no matching event within {timeout_s}s")

    async def wait_terminal(self, activation_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        terminal = {"activation.succeeded", "activation.failed", "activation.cancelled"}
        await self.wait_event(
            lambda e: e["type"] in terminal and e["data"]["activation_id"] == activation_id,
            timeout_s,
        )
        return await self.get(activation_id)


def _now() -> float:
    return time.monotonic()


def _event(fields: dict[str, str]) -> dict[str, Any]:
    return {**fields, "data": json.loads(fields["data"])}


GatewayFactory = Callable[..., AbstractAsyncContextManager[Harness]]


@pytest.fixture
def make_gateway(stack: LocalStack, topics: Topics, gateway_redis: RedisTarget) -> GatewayFactory:
    """``async with make_gateway(ack_timeout_s=1) as gw``: a running worker + API client."""

    @asynccontextmanager
    async def factory(**retry: float) -> AsyncIterator[Harness]:
        cfg = resolved(settings_env(stack, topics, gateway_redis, **retry))
        plain = await open_clean(gateway_redis)
        gateway = Gateway(cfg)
        app = create_app(gateway, manage_lifespan=False)
        token = stack.secrets["gateway_token"]
        try:
            async with gateway.running():
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport,
                    base_url="http://gateway",
                    headers={"Authorization": f"Bearer {token}"},
                ) as client:
                    await gateway.bootstrapped.wait()
                    stream = cfg.base.events_stream
                    yield Harness(gateway, client, plain, stream, gateway_redis.cluster)
        finally:  # a failed test must not leave a client for the next one's log
            await plain.aclose()

    return factory
