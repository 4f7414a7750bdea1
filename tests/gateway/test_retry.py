"""``with_redis``: retries transient errors, but never past a cancel a client swallowed."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions

from gateway.retry import with_redis


async def test_transient_errors_are_retried() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise redis.exceptions.ConnectionError("restarting")
        return "ok"

    assert await with_redis(flaky, "test", budget_s=5.0, first_s=0.001) == "ok"
    assert calls == 3


async def test_a_cancel_turned_into_a_connection_error_still_cancels() -> None:
    """redis-py may turn a cancel landing mid-command into ConnectionError; retrying it
    would keep a cancelled consumer alive (and the gateway's shutdown waiting on it)."""
    calls = 0

    async def swallows_cancel() -> None:
        nonlocal calls
        calls += 1
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise redis.exceptions.ConnectionError("Connection closed by server.") from None

    task = asyncio.create_task(with_redis(swallows_cancel, "test", budget_s=5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    assert calls == 1


async def test_a_refused_password_is_not_retried() -> None:
    """WRONGPASS / NOAUTH (a ConnectionError in redis-py) is raised at the first call."""
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise redis.exceptions.AuthenticationError("WRONGPASS invalid username-password pair")

    with pytest.raises(redis.exceptions.AuthenticationError):
        await with_redis(refused, "test", budget_s=5.0, first_s=0.001)
    assert calls == 1
