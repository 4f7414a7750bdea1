"""The saga against real SQL (SQLite and PostgreSQL) and real Redis (``caas:events``
consumer group), with the background loops running. Each test ends with the money
invariant checker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from backend.workers.consumer import EventConsumer
from tests.backend.conftest import VINS, World, WorldFactory
from tests.backend.fakes import CrashAfterCapture, Killed, emit
from tests.backend.test_purchase_saga import bought

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    """Poll an async condition (the background loops run in real time)."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - the condition is a DB read
            await asyncio.sleep(0.05)


async def states(w: World, purchase_id: Any) -> tuple[str, str]:
    got = await w.purchase(purchase_id)
    return got["state"], got["payment"]["state"]


async def test_saga_success_and_failure_through_redis(
    make_world: WorldFactory, db_url: str, redis_url: str, plain_redis: aioredis.Redis
) -> None:
    """Purchases → outbox → gateway → events on Redis → consumer: the success is CHARGED
    once, the failure FAILED_NO_CHARGE with a ticket; every entry acknowledged."""
    async with make_world(db_url, redis_url=redis_url) as w:
        w.gateway.redis = plain_redis
        w.gateway.outcome = {VINS[0][0]: "succeeded", VINS[1][0]: "failed"}
        async with w.backend.running():
            ok = await bought(w)
            bad = await bought(w, vin=VINS[1][0])

            async def settled() -> bool:
                return {(await states(w, p["id"]))[1] for p in (ok, bad)} == {
                    "CHARGED",
                    "CANCELLED",
                }

            await eventually(settled)
            assert await states(w, ok["id"]) == ("ACTIVE", "CHARGED")
            assert await states(w, bad["id"]) == ("FAILED_NO_CHARGE", "CANCELLED")
        pending = await plain_redis.xpending("caas:events", "backend")
        assert pending["pending"] == 0
        assert sum(w.provider.real_captures.values()) == 1
        await w.finish()


async def test_duplicate_and_reordered_stream_entries(
    make_world: WorldFactory, db_url: str, redis_url: str, plain_redis: aioredis.Redis
) -> None:
    """The same event_id twice and a late 'accepted' after 'succeeded': one capture."""
    async with make_world(db_url, redis_url=redis_url) as w:
        p = await bought(w)
        await w.backend.relay.run_once()
        body = {"activation_id": p["activation_id"], "vin": VINS[0][0], "feature": "climate_plus"}
        await emit(plain_redis, "caas:events", "activation.succeeded", body, event_id="e-1")
        await emit(plain_redis, "caas:events", "activation.succeeded", body, event_id="e-1")
        await emit(plain_redis, "caas:events", "activation.accepted", body, event_id="e-0")
        await emit(plain_redis, "caas:events", "activation.failed", body, event_id="e-2")
        assert w.backend.consumer is not None
        assert await w.backend.consumer.poll(pending=False, block_ms=100) == 4
        await w.drain()
        assert await states(w, p["id"]) == ("ACTIVE", "CHARGED")
        assert sum(w.provider.real_captures.values()) == 1
        await w.finish()


async def test_consumer_crash_before_ack_replays_pending_once(
    make_world: WorldFactory, db_url: str, redis_url: str, plain_redis: aioredis.Redis
) -> None:
    """Applied and committed but never XACKed: the restarted consumer reads its pending
    entries first, the inbox turns them into no-ops, and they get acknowledged."""
    async with make_world(db_url, redis_url=redis_url) as w:
        p = await bought(w)
        body = {"activation_id": p["activation_id"], "vin": VINS[0][0], "feature": "climate_plus"}
        await emit(plain_redis, "caas:events", "activation.succeeded", body, event_id="e-9")
        first = w.backend.consumer
        assert first is not None
        read: Any = await plain_redis.xreadgroup("backend", first.name, {"caas:events": ">"})
        entry_id, fields = read[0][1][0]
        from backend.workers.consumer import consume

        await consume(
            w.backend.units,
            fields["event_id"],
            fields["type"],
            json.loads(fields["data"]),
        )  # applied, then the process "dies"
        assert (await plain_redis.xpending("caas:events", "backend"))["pending"] == 1
        restarted = EventConsumer(
            plain_redis,
            "caas:events",
            "backend",
            first.name,
            w.backend.units,
            w.backend.settle,
        )
        assert await restarted.poll(pending=True, block_ms=None) == 1
        assert (await plain_redis.xpending("caas:events", "backend"))["pending"] == 0
        await w.drain()
        assert await states(w, p["id"]) == ("ACTIVE", "CHARGED")
        assert sum(w.provider.real_captures.values()) == 1
        assert entry_id
        await w.finish()


async def test_gateway_unavailable_during_purchase_delivers_later(
    make_world: WorldFactory, db_url: str, redis_url: str, plain_redis: aioredis.Redis
) -> None:
    """Gateway down while buying: the purchase is accepted, nothing is lost, and the
    outbox delivers once the gateway is back; the success is then charged."""
    async with make_world(db_url, redis_url=redis_url) as w:
        w.gateway.redis = plain_redis
        w.gateway.default_outcome = "succeeded"
        w.gateway.down = True
        async with w.backend.running():
            p = await bought(w)
            assert p["state"] == "ACTIVATION_QUEUED"
            for _ in range(5):  # time passes while the gateway is down
                w.clock.advance(2)
                await asyncio.sleep(0.05)
            assert w.gateway.requests == []
            w.gateway.down = False
            w.clock.advance(120)

            async def charged() -> bool:
                return (await states(w, p["id"]))[1] == "CHARGED"

            await eventually(charged)
            assert await states(w, p["id"]) == ("ACTIVE", "CHARGED")
        await w.finish()


async def test_killed_between_capture_and_db_write(make_world: WorldFactory, db_url: str) -> None:
    """The process dies after the provider captured, before the DB write; a new
    process on the same database finishes the intent: exactly one capture."""
    async with make_world(db_url, wrap_provider=CrashAfterCapture) as w:
        p = await bought(w)
        from backend.workers.consumer import consume

        await consume(
            w.backend.units,
            "e-1",
            "activation.succeeded",
            {"activation_id": p["activation_id"]},
        )
        with pytest.raises(Killed):
            await w.backend.settle()
        await w.backend.close()
    async with make_world(db_url, restart_of=w) as again:  # the restart, same provider
        inner = again.provider
        again.clock.advance(again.backend.executor.lease_s)  # the dead one's claim expired
        await again.drain()
        assert await states(again, p["id"]) == ("ACTIVE", "CHARGED")
        assert sum(inner.real_captures.values()) == 1
        await again.finish()


async def test_entries_of_a_dead_consumer_are_claimed(
    make_world: WorldFactory, db_url: str, redis_url: str, plain_redis: aioredis.Redis
) -> None:
    """Another consumer read an entry and died: XAUTOCLAIM takes it over, applies it once."""
    async with make_world(db_url, redis_url=redis_url) as w:
        p = await bought(w)
        body = {"activation_id": p["activation_id"], "vin": VINS[0][0], "feature": "climate_plus"}
        await emit(plain_redis, "caas:events", "activation.succeeded", body, event_id="e-5")
        await plain_redis.xreadgroup("backend", "dead-one", {"caas:events": ">"})
        consumer = w.backend.consumer
        assert consumer is not None
        assert await consumer.poll(pending=False, block_ms=None) == 0  # not new any more
        assert await consumer.claim_abandoned(min_idle_ms=0) == 1
        assert (await plain_redis.xpending("caas:events", "backend"))["pending"] == 0
        await w.drain()
        assert await states(w, p["id"]) == ("ACTIVE", "CHARGED")
        await w.finish()
