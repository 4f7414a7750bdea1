"""Gateway fixtures: a Redis db per test, fast retry policies, an in-process gateway
worker on the session stack, and helpers that wait on the event stream (XREAD BLOCK)."""

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
import redis.asyncio as aioredis
import redis.exceptions

from gateway.api import create_app
from gateway.config import GatewaySettings, ResolvedSettings
from gateway.service import Gateway
from launcher.stack import LocalStack
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


def settings_env(stack: LocalStack, topics: Topics, db: int, **retry: float) -> dict[str, str]:
    """The environment a gateway worker of this test runs with."""
    env = {
        "CAAS_MQTT_URL": stack.broker.gateway_address().url(),
        "CAAS_REDIS_URL": stack.redis.url(db) if stack.redis else "",
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
    redis: aioredis.Redis
    stream: str

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

    async def events(self) -> list[dict[str, Any]]:
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
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                await asyncio.sleep(0.1)  # Redis restarting under the test
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
def make_gateway(stack: LocalStack, topics: Topics, redis_db: int) -> GatewayFactory:
    """``async with make_gateway(ack_timeout_s=1) as gw``: a running worker + API client."""

    @asynccontextmanager
    async def factory(**retry: float) -> AsyncIterator[Harness]:
        cfg = resolved(settings_env(stack, topics, redis_db, **retry))
        plain = aioredis.Redis.from_url(cfg.redis_url, decode_responses=True)
        await plain.flushdb()
        gateway = Gateway(cfg)
        app = create_app(gateway, manage_lifespan=False)
        token = stack.secrets["gateway_token"]
        async with gateway.running():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://gateway",
                headers={"Authorization": f"Bearer {token}"},
            ) as client:
                await gateway.bootstrapped.wait()
                yield Harness(gateway, client, plain, cfg.base.events_stream)
        await plain.aclose()

    return factory
