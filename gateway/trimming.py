"""Trimming the events stream without losing an entry a consumer still needs.

The stream (docs/spec.md §4) only grows: every transition XADDs to it. An entry may go
once every consumer group has both read it and acknowledged it, and once it is older
than the retention (``CAAS_EVENTS_KEEP_S``, kept for readers without a group: tools
that XREAD, an operator looking back). So the trim point is the smallest of

- each group's oldest pending entry (delivered, not acknowledged: a crashed consumer
  re-reads it from its pending list), and the entry after its last delivered one;
- ``now − keep``,

and ``XTRIM MINID`` removes only what lies below it. With no group at all, only the
retention applies. Every worker runs it now and then: trimming is idempotent, and a
point computed from older marks is only lower, so two workers at once cannot remove
more than one would; no lease is needed. The decision (``trim_floor``) is pure; the
marks are read and the stream trimmed by ``Store``.

One race is accepted: a group created (or set back with ``XGROUP SETID``) at an old id
between the read of the marks and the trim misses what was below the point; a group
created from the stream's start sees what the retention kept.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from gateway.retry import TRANSIENT
from protocol.tasks import cancel_requested
from protocol.timeutil import Clock

log = logging.getLogger(__name__)

StreamId = tuple[int, int]  # (milliseconds, sequence), ordered like Redis orders ids
NOTHING: StreamId = (0, 1)  # no entry lies below 0-1 (0-0 is not a valid id)


def parse_id(text: str) -> StreamId:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


def after(sid: StreamId) -> StreamId:
    """The smallest id greater than ``sid``."""
    ms, seq = sid
    return (ms + 1, 0) if seq >= 2**64 - 1 else (ms, seq + 1)


@dataclass(frozen=True, slots=True)
class GroupMark:
    name: str
    last_delivered: StreamId
    oldest_pending: StreamId | None  # None: nothing delivered is waiting for an ack


def group_floor(mark: GroupMark) -> StreamId:
    """The first id this group may still need."""
    floor = after(mark.last_delivered)
    if mark.oldest_pending is not None:
        # pending ids are never above the last delivered one; min() in case a consumer
        # delivered more between the two reads (it only raises both)
        floor = min(floor, mark.oldest_pending)
    return floor


def trim_floor(groups: Iterable[GroupMark], now_ms: int, keep_ms: int) -> StreamId | None:
    """The id below which every entry may go (``XTRIM MINID``), or None for nothing."""
    retention: StreamId = (max(0, now_ms - keep_ms), 0)
    floor = min([retention, *(group_floor(g) for g in groups)])
    return None if floor <= NOTHING else floor


class EventsStore(Protocol):
    async def event_groups(self) -> list[GroupMark]: ...

    async def trim_events(self, floor: StreamId) -> int: ...


class EventsTrimmer:
    def __init__(
        self,
        store: EventsStore,
        clock: Clock,
        keep_s: float,
        interval_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.keep_ms = round(keep_s * 1000)
        self.interval_s = interval_s
        self.rng = rng or random.Random()
        self.removed = 0  # entries this worker trimmed (a test and log figure)

    async def trim_once(self) -> int:
        """Trim what every group has acknowledged and the retention lets go; the count."""
        groups = await self.store.event_groups()
        floor = trim_floor(groups, round(self.clock.now() * 1000), self.keep_ms)
        if floor is None:
            return 0
        removed = await self.store.trim_events(floor)
        if removed:
            self.removed += removed
            log.info(
                "events.trimmed removed=%d below=%s groups=%d",
                removed, format_id(floor), len(groups),
            )  # fmt: skip
        return removed

    async def run(self) -> None:
        """Trim every ``interval_s`` (± half, so workers spread out), until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s * self.rng.uniform(0.5, 1.5))
            try:
                await self.trim_once()
            except TRANSIENT as exc:  # Redis away: the next round trims as much
                log.debug("events.trim_unavailable error=%s", type(exc).__name__)
            except Exception as exc:  # trimming never takes a worker down
                log.warning("events.trim_failed error=%r", exc)
            if cancel_requested():  # redis-py may turn our cancel into an error
                raise asyncio.CancelledError
