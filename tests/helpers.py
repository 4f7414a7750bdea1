"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(
    predicate: Callable[[], object], timeout_s: float = 5.0, interval_s: float = 0.02
) -> None:
    """Wait for ``predicate()`` to become truthy; TimeoutError with a clear message if not."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - the conditions are plain values, not events
                await asyncio.sleep(interval_s)
    except TimeoutError:
        raise TimeoutError(f"condition not met within {timeout_s}s: {predicate}") from None
