"""The background loops under load (issue 6): the relay and the money executor work on
several claimed rows at once, each row exactly once even with two workers; a claim left
by a dead worker expires; a commit wakes the loop it gave work to; a consumer batch
whose transaction fails is applied entry by entry."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from backend.adapters.payments import PaymentProvider, ProviderResult
from backend.workers import consumer as consumer_module
from backend.workers.consumer import consume
from backend.workers.money import MoneyExecutor
from backend.workers.relay import OutboxRelay
from tests.backend.conftest import World, WorldFactory
from tests.backend.fakes import FakeGateway, emit
from tests.backend.test_purchase_saga import bought, event

pytestmark = [pytest.mark.timeout(60), pytest.mark.serial]

FLEET = [(f"WVWZZZ1JZ3W3{n:05d}", "Tourer") for n in range(6)]


class Width:
    """Holds each call until ``width`` calls were in flight at the same time (5 s at
    most, then TimeoutError): a worker that runs one row at a time fails on it."""

    def __init__(self, width: int) -> None:
        self.width, self.in_flight, self.reached = width, 0, False

    async def hold(self) -> None:
        self.in_flight += 1
        try:
            async with asyncio.timeout(5):
                while not self.reached and self.in_flight < self.width:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
            self.reached = True
        finally:
            self.in_flight -= 1


@dataclass
class WideGateway(FakeGateway):
    """The fake gateway behind a ``Width``."""

    width: Width = field(default_factory=lambda: Width(1))

    async def request_activation(self, body: dict[str, Any]) -> dict[str, Any]:
        await self.width.hold()
        return await super().request_activation(body)


class WideProvider:
    """The provider client, its captures behind a ``Width``."""

    def __init__(self, inner: PaymentProvider, width: int) -> None:
        self.inner, self.width = inner, Width(width)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def capture(self, **kw: Any) -> ProviderResult:
        await self.width.hold()
        return await self.inner.capture(**kw)


async def buy_all(w: World) -> list[dict[str, Any]]:
    return [await bought(w, vin=vin) for vin, _ in FLEET]


def another_relay(w: World) -> OutboxRelay:
    """A second relay on the same database, as in another backend process."""
    return OutboxRelay(w.backend.units, w.gateway, concurrency=8)


async def test_relay_sends_claimed_rows_concurrently(make_world: WorldFactory, db_url: str) -> None:
    """Six due rows: the relay has all six POSTs in flight at once, each row sent once."""
    wide = WideGateway(width=Width(len(FLEET)))
    async with make_world(db_url, gateway=wide, vins=FLEET) as w:
        bought_ = await buy_all(w)
        assert await w.backend.relay.run_once() == len(FLEET)
        assert sorted(r["activation_id"] for r in wide.requests) == sorted(
            p["activation_id"] for p in bought_
        )
        assert await w.backend.relay.run_once() == 0
        await w.finish()


async def test_two_relays_send_each_row_once(make_world: WorldFactory, db_url: str) -> None:
    """Two relays (two processes) at once on the same rows: each row is sent once."""
    async with make_world(db_url, vins=FLEET) as w:
        await buy_all(w)
        accepted = await asyncio.gather(w.backend.relay.run_once(), another_relay(w).run_once())
        ids = [r["activation_id"] for r in w.gateway.requests]
        assert sum(accepted) == len(ids) == len(set(ids)) == len(FLEET)
        await w.finish()


async def test_money_intents_run_concurrently_each_once(
    make_world: WorldFactory, db_url: str
) -> None:
    """Six captures in flight at once at the provider; two executors together capture
    each payment exactly once."""
    async with make_world(db_url, vins=FLEET) as w:
        bought_ = await buy_all(w)
        await w.backend.relay.run_once()
        for p in bought_:
            await event(w, "activation.succeeded", p)
        wide = WideProvider(w.provider.client, len(FLEET))
        other = MoneyExecutor(w.backend.units, wide, 8)
        w.backend.executor.provider = wide
        done = await asyncio.gather(w.backend.executor.run_pending(), other.run_pending())
        assert sum(done) == len(FLEET)
        assert w.provider.calls["capture"] == len(FLEET)
        assert sum(w.provider.real_captures.values()) == len(FLEET)
        await w.finish()


async def test_claim_of_a_dead_relay_expires(world: World) -> None:
    """A relay claimed a row and died: nobody sends it during the lease, the next relay
    sends it once the lease is over."""
    await bought(world)
    rows, _ = await world.backend.relay._claim(10)  # claimed, then the process "dies"
    assert len(rows) == 1
    assert await world.backend.relay.run_once() == 0
    world.clock.advance(world.backend.relay.lease_s)
    assert await world.backend.relay.run_once() == 1
    assert len(world.gateway.requests) == 1
    await world.finish()


async def test_commit_wakes_the_loops_long_before_the_poll(make_world: WorldFactory) -> None:
    """With a 60 s poll interval, a purchase reaches the gateway, its capture the
    provider and its notices the customer within seconds: the commits woke the loops."""
    async with make_world(backend_poll_s=60.0) as w:
        async with w.backend.running():
            await asyncio.sleep(0.1)  # every loop made its first pass and now waits
            p = await bought(w)
            async with asyncio.timeout(5):
                while not w.gateway.requests:  # noqa: ASYNC110 - the relay loop appends
                    await asyncio.sleep(0.01)
                await event(w, "activation.succeeded", p)
                while (await w.purchase(p["id"]))["payment"]["state"] != "CHARGED":  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                while not w.channels["email"].sent:  # noqa: ASYNC110 - the notify loop sends
                    await asyncio.sleep(0.01)
        await w.finish()


@pytest.mark.integration
async def test_failed_batch_is_applied_entry_by_entry(
    make_world: WorldFactory,
    db_url: str,
    redis_url: str,
    plain_redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch transaction fails: each entry is applied in a transaction of its own,
    once, and every entry is acknowledged after its commit."""
    async with make_world(db_url, redis_url=redis_url) as w:
        p = await bought(w)
        await w.backend.relay.run_once()
        body = {"activation_id": p["activation_id"], "vin": FLEET[0][0], "feature": "climate_plus"}
        await emit(plain_redis, "caas:events", "activation.accepted", body, event_id="e-1")
        await emit(plain_redis, "caas:events", "activation.succeeded", body, event_id="e-2")
        await emit(plain_redis, "caas:events", "activation.succeeded", body, event_id="e-2")

        async def broken(*_: object) -> list[str]:
            raise RuntimeError("batch transaction failed")

        monkeypatch.setattr(consumer_module, "consume_batch", broken)
        assert w.backend.consumer is not None
        assert await w.backend.consumer.poll(pending=False, block_ms=100) == 3
        assert (await plain_redis.xpending("caas:events", "backend"))["pending"] == 0
        assert await consume(w.backend.units, "e-2", "x", {}) == "duplicate"
        await w.drain()
        assert (await w.purchase(p["id"]))["payment"]["state"] == "CHARGED"
        assert sum(w.provider.real_captures.values()) == 1
        await w.finish()


async def test_a_claim_takes_at_most_its_limit(make_world: WorldFactory, db_url: str) -> None:
    """Six rows due at the same moment, claims of two: three passes of two rows each
    (PostgreSQL once ran the claim's subquery per row and took all six at once)."""
    async with make_world(db_url, vins=FLEET) as w:
        await buy_all(w)
        assert [await w.backend.relay.run_once(limit=2) for _ in range(4)] == [2, 2, 2, 0]
        assert len(w.gateway.requests) == len(FLEET)
        await w.finish()
