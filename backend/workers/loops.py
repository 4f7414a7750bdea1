"""The background loops: one per job, woken by a commit that gave it work, polling
as the safety net; and bounded concurrency over claimed rows."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from typing import TypeVar, cast

from backend.logs import log
from protocol.tasks import cancel_requested

T = TypeVar("T")
R = TypeVar("R")

Step = Callable[[], Awaitable[object]]


async def run_loop(name: str, step: Step, wake: asyncio.Event, poll_s: float) -> None:
    """Run ``step`` until cancelled: again at once while it reports work done (a
    positive count: more may be due), else on ``wake`` or after ``poll_s``."""
    while not cancel_requested():  # a cancel a driver swallowed still stops the loop
        wake.clear()  # before the pass: a commit during the pass wakes the next one
        try:
            result = await step()
        except Exception as exc:  # a failed pass is logged; the next pass retries
            log("backend.worker_error", job=name, error=f"{type(exc).__name__}: {exc}"[:300])
            result = 0
        if isinstance(result, int) and not isinstance(result, bool) and result > 0:
            await asyncio.sleep(0)  # let the API and the other loops in between passes
            continue
        with suppress(TimeoutError):
            async with asyncio.timeout(poll_s):
                await wake.wait()


async def bounded(
    items: Iterable[T], work: Callable[[T], Awaitable[R]], concurrency: int
) -> list[R]:
    """``work`` on every item, at most ``concurrency`` at a time; the results in order.
    The items must be claimed already: no two workers may hold the same row."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(item: T) -> R:
        async with gate:
            return await work(item)

    # every claimed row gets its turn even if another one fails; then the first error
    results = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[R], results)
