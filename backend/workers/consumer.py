"""Idempotent consumer of ``caas:events`` (Redis consumer group).

Per batch read: one transaction writes the inbox rows and applies the events; XACK only
after that commit (a batch whose transaction fails is applied entry by entry). A crash
before the XACK redelivers the entries (pending list, read first on start) and the inbox
makes the replay a no-op. The commit wakes the loops that run the money intents and
notifications the events wrote.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from sqlalchemy.exc import IntegrityError

from backend.logs import log
from backend.store import inbox
from backend.store.unit_of_work import Units
from protocol.redis_connect import AnyRedis
from protocol.tasks import cancel_requested

CLAIM_EVERY_PASSES = 30  # with 1 s blocking reads: look for abandoned entries every ~30 s


class EventConsumer:
    def __init__(
        self,
        redis_client: AnyRedis,
        stream: str,
        group: str,
        name: str,
        units: Units,
        after_batch: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.redis = redis_client
        self.stream, self.group, self.name = stream, group, name
        self.units = units
        self.after_batch = after_batch
        self.handled = 0
        self.redis_up = units.metrics.dependency("redis")

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, block_ms: int = 1000) -> None:
        """Consume until cancelled. After any failure the pending entries (read but not
        acknowledged) are read again first, so nothing is skipped."""
        await self.ensure_group()
        recovering, passes = True, 0
        while not cancel_requested():  # a cancel redis-py swallowed still stops the loop
            passes += 1
            recovering = recovering or passes % CLAIM_EVERY_PASSES == 0
            try:
                if recovering:
                    await self.claim_abandoned()
                    recovering = await self.poll(pending=True, block_ms=None) > 0
                else:
                    await self.poll(pending=False, block_ms=block_ms)
            except Exception as exc:  # Redis or the database hiccuped: retry, never die
                if isinstance(exc, redis.exceptions.RedisError):
                    self.redis_up(False)
                log("consumer.error", error=f"{type(exc).__name__}: {exc}"[:300])
                recovering = True
                await asyncio.sleep(0.5)

    async def lag(self) -> int | None:
        """Entries of the stream this group has not read yet (Redis 7's ``lag`` of XINFO
        GROUPS; None when Redis cannot tell, e.g. after entries were deleted)."""
        try:
            groups: Any = await self.redis.xinfo_groups(self.stream)
        except redis.exceptions.RedisError:
            self.redis_up(False)
            raise
        self.redis_up(True)
        mine = next((g for g in groups if g.get("name") == self.group), None)
        lag = None if mine is None else mine.get("lag")
        return int(lag) if lag is not None else None

    async def claim_abandoned(self, min_idle_ms: int = 60_000, count: int = 100) -> int:
        """Take over entries another consumer read and never acknowledged (it died)."""
        claimed: Any = await self.redis.xautoclaim(
            self.stream, self.group, self.name, min_idle_ms, "0-0", count=count
        )
        return await self.handle_batch([e for e in claimed[1] if e[1]])

    async def poll(self, pending: bool, block_ms: int | None, count: int = 100) -> int:
        """Read and handle one batch: this consumer's pending entries, or new ones."""
        read = await self.redis.xreadgroup(
            self.group,
            self.name,
            {self.stream: "0" if pending else ">"},
            count=count,
            block=block_ms,
        )
        self.redis_up(True)
        streams: list[tuple[str, list[tuple[str, dict[str, str]]]]] = read or []  # type: ignore[assignment]
        return await self.handle_batch([entry for _, batch in streams for entry in batch])

    async def handle_batch(self, entries: list[tuple[str, dict[str, str]]]) -> int:
        """Apply the entries in one transaction, then acknowledge them all (after the
        commit). If that transaction fails, each entry gets a transaction of its own,
        as before batching, so one bad entry cannot hold the others back."""
        if not entries:
            return 0
        events, malformed = [], []
        for entry_id, fields in entries:
            try:
                events.append(Event(entry_id, *inbox.parse_entry(fields)))
            except ValueError as exc:
                log("consumer.malformed", entry_id=entry_id, error=str(exc))
                malformed.append(entry_id)
        try:
            outcomes = await consume_batch(self.units, events)
        except Exception as exc:
            log("consumer.batch_failed", entries=len(events), error=type(exc).__name__)
            outcomes = [await self._apply(e.event_id, e.type, e.data) for e in events]
        await self.redis.xack(self.stream, self.group, *malformed, *(e.entry_id for e in events))
        self.handled += len(events)
        for e, outcome in zip(events, outcomes, strict=True):
            log("consumer.event", event_id=e.event_id, type=e.type, outcome=outcome)
        if self.after_batch is not None:  # the commit already woke the loops it fed
            await self.after_batch()
        return len(entries)

    async def _apply(self, event_id: str, type_: str, data: dict[str, Any]) -> str:
        return await consume(self.units, event_id, type_, data)


@dataclass(frozen=True)
class Event:
    entry_id: str
    event_id: str
    type: str
    data: dict[str, Any]


async def consume(units: Units, event_id: str, type_: str, data: dict[str, Any]) -> str:
    """Apply one gateway event exactly once: inbox row and effects in one transaction."""
    try:
        async with units.begin() as work:
            if await inbox.seen(work.session, event_id):
                return "duplicate"
            outcome = await inbox.apply_gateway_event(work, type_, data)
            inbox.remember(work.session, event_id, "gateway", type_, outcome, work.now)
    except IntegrityError:
        return "duplicate"  # another consumer committed the same event first
    return outcome


async def consume_batch(units: Units, events: list[Event]) -> list[str]:
    """Apply several events exactly once, in stream order, in one transaction: their
    inbox rows commit with their effects, all or none. Raises when any of it fails
    (e.g. another consumer committed one of these events first: IntegrityError).

    The purchases, payments, customers, vehicles and intents the batch needs are loaded
    up front in two queries (``UnitOfWork.load``); with no query left between the
    events, the session also flushes their writes together at commit."""
    if not events:
        return []
    async with units.begin() as work:
        seen = await inbox.seen_among(work.session, [e.event_id for e in events])
        wanted = {inbox.purchase_activation_id(e.type, e.data) for e in events}
        await work.load({a for a in wanted if a is not None})
        outcomes = []
        for e in events:
            if e.event_id in seen:
                outcomes.append("duplicate")
                continue
            seen.add(e.event_id)  # the same event twice in one batch
            outcome = await inbox.apply_gateway_event(work, e.type, e.data)
            inbox.remember(work.session, e.event_id, "gateway", e.type, outcome, work.now)
            outcomes.append(outcome)
    return outcomes
