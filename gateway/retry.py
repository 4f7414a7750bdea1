"""Riding out Redis outages (a restart with AOF replay takes a moment). A refused
password is no outage: it is raised at once, never retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions

from protocol.tasks import cancel_requested

log = logging.getLogger(__name__)
T = TypeVar("T")

# a Redis Cluster during a failover: the slot's master is gone and not yet replaced
CLUSTER_FAILING_OVER = (
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)
TRANSIENT = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    *CLUSTER_FAILING_OVER,
    ConnectionError,
    OSError,
)


async def with_redis(
    fn: Callable[[], Awaitable[T]], what: str, budget_s: float = 60.0, first_s: float = 0.05
) -> T:
    """Run ``fn``, retrying transient Redis errors with backoff for up to ``budget_s``;
    an authentication error (WRONGPASS, NOAUTH: a ConnectionError in redis-py) is
    raised at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    delay = first_s
    while True:
        try:
            return await fn()
        except TRANSIENT as exc:
            if isinstance(exc, redis.exceptions.AuthenticationError):
                raise
            if cancel_requested():
                raise asyncio.CancelledError from exc
            if loop.time() + delay > deadline:
                raise
            log.warning(
                "redis.retry what=%s error=%s delay_s=%.2f", what, type(exc).__name__, delay
            )
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
