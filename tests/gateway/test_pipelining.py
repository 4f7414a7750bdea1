"""AutoPipeline against the project's Redis: the calls of one loop iteration share a
round trip, and every caller still gets its own result, error, or reloaded script."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from gateway.pipelining import AutoPipeline
from launcher.stack import LocalStack

pytestmark = pytest.mark.integration
ECHO = "return {KEYS[1], ARGV[1]}"
FAILS = "return redis.error_reply('no ' .. ARGV[1])"


@pytest.fixture
async def client(stack: LocalStack, redis_db: int) -> AsyncIterator[aioredis.Redis]:
    assert stack.redis is not None
    redis = aioredis.Redis.from_url(stack.redis.url(redis_db), decode_responses=True)
    yield redis
    await redis.aclose()


async def test_calls_of_one_iteration_share_a_pipeline(client: aioredis.Redis) -> None:
    pipe, echo = AutoPipeline(client), client.register_script(ECHO)
    await client.script_load(ECHO)
    results = await asyncio.gather(
        *(pipe.run(echo, keys=[f"k{i}"], args=[str(i)]) for i in range(20))
    )
    assert results == [[f"k{i}", str(i)] for i in range(20)]
    assert (pipe.calls, pipe.batches) == (20, 1)
    assert await pipe.run(echo, keys=["later"], args=["x"]) == ["later", "x"]
    assert (pipe.calls, pipe.batches) == (21, 2)


async def test_an_error_reaches_only_its_caller(client: aioredis.Redis) -> None:
    pipe = AutoPipeline(client)
    echo, fails = client.register_script(ECHO), client.register_script(FAILS)
    await client.script_load(ECHO)
    await client.script_load(FAILS)
    ok, failed = await asyncio.gather(
        pipe.run(echo, keys=["k"], args=["v"]),
        pipe.run(fails, keys=["k"], args=["luck"]),
        return_exceptions=True,
    )
    assert ok == ["k", "v"]
    assert isinstance(failed, redis.exceptions.ResponseError)
    assert "no luck" in str(failed)


async def test_a_script_missing_after_a_flush_is_loaded_again(client: aioredis.Redis) -> None:
    """Redis forgets its script cache on restart; the caller must not notice."""
    pipe, echo = AutoPipeline(client), client.register_script(ECHO)
    await client.script_flush()
    results = await asyncio.gather(*(pipe.run(echo, keys=["k"], args=[str(i)]) for i in range(3)))
    assert results == [["k", "0"], ["k", "1"], ["k", "2"]]
    assert await pipe.run(echo, keys=["k"], args=["again"]) == ["k", "again"]


async def test_a_dead_connection_fails_every_caller_of_the_batch(stack: LocalStack) -> None:
    closed = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    pipe, echo = AutoPipeline(closed), closed.register_script(ECHO)
    outcomes = await asyncio.gather(
        *(pipe.run(echo, keys=["k"], args=["v"]) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, redis.exceptions.ConnectionError) for o in outcomes)
    await closed.aclose()
