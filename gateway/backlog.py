"""The inbound backlog: vehicle messages read off the socket, waiting for a consumer.

Bounded in bytes, not in messages (100,000 messages of 244 kB each took a worker from
321 to 678 MB). Past ``max_bytes`` the backlog asks the MQTT connection to stop
reading its socket; it resumes once the consumers have brought it under half of that.
While paused, the broker holds what is routed to this worker, and TCP holds the rest:
that is the backpressure. A pause long enough to miss the keepalive makes the client
reconnect with a clean session, which loses what the broker held (docs/gateway.md,
crash-safety point 6 covers lost messages). One socket read can still overshoot the
limit a little; at twice the limit a message is dropped and counted (``backlog``).

Items are numbered in arrival order (``take`` returns the number, the consumer gives it
back to ``done``); ``handled_below`` says up to which number every item has been
handled, so the twin bootstrap can wait for the retained messages it queued without
waiting for the live traffic behind them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

ITEM_OVERHEAD_BYTES = 256  # the Inbound object, its strings and the queue's slot


@dataclass(frozen=True, slots=True)
class Inbound:
    leaf: str
    vin: str
    payload: bytes
    correlation: bytes | None
    recv_at: float

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.correlation or b"") + ITEM_OVERHEAD_BYTES


class Backlog:
    def __init__(
        self, max_bytes: int, pause: Callable[[], None], resume: Callable[[], None]
    ) -> None:
        self.max_bytes = max_bytes
        self._pause = pause
        self._resume = resume
        self._queue: asyncio.Queue[Inbound] = asyncio.Queue()
        self.bytes = 0
        self.paused = False
        self.pauses = 0
        self.accepted = 0  # items queued so far: the next item's number
        self._taken = 0
        self._open: set[int] = set()  # numbers of the items consumers are handling
        self._progress = asyncio.Event()  # set whenever an item is done

    def put(self, item: Inbound) -> bool:
        """Queue ``item``; False when it had to be dropped (twice over the limit)."""
        size = item.size
        if self.bytes + size > 2 * self.max_bytes:
            return False
        self._queue.put_nowait(item)
        self.accepted += 1
        self.bytes += size
        if self.bytes > self.max_bytes and not self.paused:
            self.paused = True
            self.pauses += 1
            self._pause()
        return True

    async def get(self) -> Inbound:
        """The next item, counted as handled at once (see ``take``)."""
        number, item = await self.take()
        self.done(number)
        return item

    async def take(self) -> tuple[int, Inbound]:
        """The next item and its number; ``done(number)`` once it is handled."""
        item = await self._queue.get()
        number = self._taken  # FIFO: the n-th item taken is the n-th accepted
        self._taken += 1
        self._open.add(number)
        self.bytes -= item.size
        if self.paused and self.bytes <= self.max_bytes // 2:
            self.paused = False
            self._resume()
        return number, item

    def done(self, number: int) -> None:
        """The consumer that took item ``number`` has finished with it (handled or not)."""
        self._open.discard(number)
        self._progress.set()

    def handled_below(self) -> int:
        """Every item numbered below this one has been taken and handled."""
        return min(self._open, default=self._taken)

    async def wait_handled(self, mark: int) -> None:
        """Return once every item numbered below ``mark`` has been handled."""
        while self.handled_below() < mark:
            self._progress.clear()
            await self._progress.wait()

    def qsize(self) -> int:
        return self._queue.qsize()
