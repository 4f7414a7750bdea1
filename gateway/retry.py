"""Riding out Redis outages (a restart with AOF replay takes a moment)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    ConnectionError,
    OSError,
)


def cancel_requested() -> bool:
    """This task was cancelled, but the CancelledError may not have reached us: redis-py
    can turn a cancel that lands mid-command into a ConnectionError, or (Python 3.11's
    ``asyncio.wait_for`` around its socket write) drop it and return the command's reply.
    Loops check this so a swallowed cancel cannot keep them (and a shutdown waiting on
    them) alive."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def with_redis(
    fn: Callable[[], Awaitable[T]], what: str, budget_s: float = 60.0, first_s: float = 0.05
) -> T:
    """Run ``fn``, retrying transient Redis errors with backoff for up to ``budget_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    delay = first_s
    while True:
        try:
            return await fn()
        except TRANSIENT as exc:
            if cancel_requested():
                raise asyncio.CancelledError from exc
            if loop.time() + delay > deadline:
                raise
            log.warning(
                "redis.retry what=%s error=%s delay_s=%.2f", what, type(exc).__name__, delay
            )
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
