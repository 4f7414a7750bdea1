"""Trimming the events stream (gateway/trimming.py): the pure trim point, then the
trimmer against the real Redis with consumer groups that read and acknowledge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.keys import Keys
from gateway.store import Store
from gateway.trimming import EventsTrimmer, GroupMark, after, parse_id, trim_floor
from launcher.stack import LocalStack
from protocol.timeutil import ManualClock, SystemClock
from protocol.topics import Topics
from tests.gateway.conftest import GatewayFactory
from tests.gateway.vehicle import ScriptedVehicle

NOW_MS = 1_795_000_000_000
HOUR_MS = 3_600_000


def mark(name: str, last: str, oldest: str | None = None) -> GroupMark:
    return GroupMark(name, parse_id(last), parse_id(oldest) if oldest else None)


# ---------------------------------------------------------------- pure
@pytest.mark.timeout(5)
def test_ids_parse_and_step_like_redis() -> None:
    assert parse_id("1795000000000-7") == (1_795_000_000_000, 7)
    assert parse_id("5") == (5, 0)
    assert after((5, 7)) == (5, 8)
    assert after((5, 2**64 - 1)) == (6, 0)


@pytest.mark.timeout(5)
def test_no_group_trims_by_retention_only() -> None:
    assert trim_floor([], NOW_MS, HOUR_MS) == (NOW_MS - HOUR_MS, 0)
    assert trim_floor([], NOW_MS, 0) == (NOW_MS, 0)
    assert trim_floor([], HOUR_MS // 2, HOUR_MS) is None  # nothing is that old


@pytest.mark.timeout(5)
def test_a_group_keeps_what_it_has_not_read() -> None:
    """Read up to 100-3, nothing pending: everything after 100-3 stays."""
    assert trim_floor([mark("backend", "100-3")], NOW_MS, 0) == (100, 4)


@pytest.mark.timeout(5)
def test_a_group_keeps_what_it_has_not_acknowledged() -> None:
    """Read up to 100-3 but 50-0 still pending: everything from 50-0 stays."""
    assert trim_floor([mark("backend", "100-3", "50-0")], NOW_MS, 0) == (50, 0)


@pytest.mark.timeout(5)
def test_the_slowest_group_and_the_retention_decide() -> None:
    groups = [mark("fast", "900-0"), mark("slow", "400-0", "200-1"), mark("idle", "800-0")]
    assert trim_floor(groups, NOW_MS, 0) == (200, 1)
    assert trim_floor(groups, 300, 150) == (150, 0)  # the retention is lower here
    assert trim_floor([*groups, mark("new", "0-0")], NOW_MS, 0) is None  # reads from 0


# ---------------------------------------------------------------- real Redis
@pytest.fixture
async def events(stack: LocalStack, redis_db: int) -> AsyncIterator[tuple[aioredis.Redis, Store]]:
    assert stack.redis is not None
    client = aioredis.Redis.from_url(stack.redis.url(redis_db), decode_responses=True)
    await client.flushdb()
    yield client, Store(client, Keys("caas:gw", "caas:events"))
    await client.aclose()


async def read(client: aioredis.Redis, group: str, count: int) -> list[str]:
    """``count`` new entries delivered to ``group`` (pending until acknowledged)."""
    got: list[Any] = await client.xreadgroup(group, "c1", {"caas:events": ">"}, count=count)  # type: ignore[assignment]
    return [entry_id for _, entries in got for entry_id, _ in entries]


async def ids(client: aioredis.Redis) -> list[str]:
    entries: list[Any] = await client.xrange("caas:events")  # type: ignore[assignment]
    return [entry_id for entry_id, _ in entries]


@pytest.mark.integration
@pytest.mark.timeout(30)
async def test_nothing_a_lagging_group_has_not_acknowledged_is_trimmed(
    events: tuple[aioredis.Redis, Store],
) -> None:
    """Two groups; ``backend`` reads and acks all 10 entries, ``audit`` reads 6 and acks
    3. Trimming keeps the 3 it holds pending and the 4 it has not read; after it acks,
    the stream shrinks to what it has not read; after it reads and acks the rest, to 0."""
    client, store = events
    written = [await client.xadd("caas:events", {"n": str(n)}) for n in range(10)]
    for group in ("backend", "audit"):
        await client.xgroup_create("caas:events", group, id="0")
    later = ManualClock(SystemClock().now() + 60)  # the retention lets everything go
    trimmer = EventsTrimmer(store, later, keep_s=0, interval_s=60)

    await client.xack("caas:events", "backend", *await read(client, "backend", 10))
    audit = await read(client, "audit", 6)
    await client.xack("caas:events", "audit", *audit[:3])
    assert await trimmer.trim_once() == 3
    assert await ids(client) == written[3:]
    pending: list[Any] = await client.xpending_range("caas:events", "audit", "-", "+", 10)  # type: ignore[assignment]
    assert [p["message_id"] for p in pending] == audit[3:]
    assert await trimmer.trim_once() == 0  # idempotent

    await client.xack("caas:events", "audit", *audit[3:])
    assert await trimmer.trim_once() == 3
    assert await ids(client) == written[6:]  # the 4 it has not read stay

    await client.xack("caas:events", "audit", *await read(client, "audit", 10))
    assert await trimmer.trim_once() == 4
    assert await client.xlen("caas:events") == 0
    assert trimmer.removed == 10


@pytest.mark.integration
@pytest.mark.timeout(30)
async def test_retention_keeps_recent_entries_with_or_without_groups(
    events: tuple[aioredis.Redis, Store],
) -> None:
    """No group: entries older than keep_s go, newer ones stay. A group that acked
    everything does not make the retention shorter."""
    client, store = events
    now_ms = round(SystemClock().now() * 1000)
    old = [
        await client.xadd("caas:events", {"n": str(n)}, id=f"{now_ms - 10_000}-{n}")
        for n in range(3)
    ]
    new = [await client.xadd("caas:events", {"n": "new"}, id=f"{now_ms}-{n}") for n in range(2)]
    assert old and new
    assert await store.event_groups() == []
    trimmer = EventsTrimmer(store, SystemClock(), keep_s=5, interval_s=60)
    assert await trimmer.trim_once() == 3
    assert await ids(client) == new

    await client.xgroup_create("caas:events", "backend", id="0")
    await client.xack("caas:events", "backend", *await read(client, "backend", 10))
    assert await EventsTrimmer(store, SystemClock(), keep_s=3600, interval_s=60).trim_once() == 0
    assert await ids(client) == new


@pytest.mark.integration
@pytest.mark.timeout(30)
async def test_no_stream_no_trim(events: tuple[aioredis.Redis, Store]) -> None:
    _, store = events
    assert await store.event_groups() == []
    assert await EventsTrimmer(store, ManualClock(), keep_s=0, interval_s=60).trim_once() == 0


@pytest.mark.integration
@pytest.mark.timeout(30)
async def test_the_loop_trims_and_survives_until_cancelled(
    events: tuple[aioredis.Redis, Store],
) -> None:
    """run(): trims every interval; stops on cancel."""
    client, store = events
    await client.xadd("caas:events", {"n": "0"})
    trimmer = EventsTrimmer(store, SystemClock(), keep_s=0, interval_s=0.02)
    task = asyncio.create_task(trimmer.run())
    await asyncio.sleep(0.5)  # about 25 rounds: the first one past the entry's ms trims it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trimmer.removed == 1
    assert await client.xlen("caas:events") == 0


@pytest.mark.integration
@pytest.mark.timeout(30)
async def test_a_worker_trims_only_what_the_backend_group_acknowledged(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics
) -> None:
    """A running worker's trimmer on its own stream: an activation's events stay while
    the backend's group holds them pending, and go once it acknowledges them."""
    car = ScriptedVehicle(stack.broker.fleet_address(), topics, ["ack"])
    async with car, make_gateway() as gw:
        assert gw.gateway is not None
        trimmer = gw.gateway.trimmer
        trimmer.keep_ms = 0
        trimmer.clock = ManualClock(SystemClock().now() + 60)
        await gw.redis.xgroup_create(gw.stream, "backend", id="0", mkstream=True)
        created = await gw.activate(car.vin, "climate_plus")
        await gw.wait_terminal(created["activation_id"])
        got: list[Any] = await gw.redis.xreadgroup(  # type: ignore[assignment]
            "backend", "c1", {gw.stream: ">"}, count=100
        )
        delivered = [entry_id for _, entries in got for entry_id, _ in entries]
        assert len(delivered) == len(await gw.events()) >= 2
        assert await trimmer.trim_once() == 0  # all pending
        await gw.redis.xack(gw.stream, "backend", *delivered)
        assert await trimmer.trim_once() == len(delivered)
        assert await gw.events() == []
