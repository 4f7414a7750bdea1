"""Idempotent consumer of ``caas:events`` (Redis consumer group).

Per entry: one transaction writes the inbox row and applies the event; XACK only after
that commit. A crash before the XACK redelivers the entry (pending list, read first on
start) and the inbox makes the replay a no-op. Money intents written by the event are
executed right after, and by the periodic worker if this process dies first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from sqlalchemy.exc import IntegrityError

from backend import inbox
from backend.db import Sessions
from backend.logs import log
from protocol.timeutil import Clock

CLAIM_EVERY_PASSES = 30  # with 1 s blocking reads: look for abandoned entries every ~30 s


class EventConsumer:
    def __init__(
        self,
        redis_client: aioredis.Redis,
        stream: str,
        group: str,
        name: str,
        sessions: Sessions,
        clock: Clock,
        after_batch: Callable[[], Awaitable[Any]],
    ) -> None:
        self.redis = redis_client
        self.stream, self.group, self.name = stream, group, name
        self.sessions = sessions
        self.clock = clock
        self.after_batch = after_batch
        self.handled = 0

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
        while True:
            passes += 1
            recovering = recovering or passes % CLAIM_EVERY_PASSES == 0
            try:
                if recovering:
                    await self.claim_abandoned()
                    recovering = await self.poll(pending=True, block_ms=None) > 0
                else:
                    await self.poll(pending=False, block_ms=block_ms)
            except Exception as exc:  # Redis or the database hiccuped: retry, never die
                log("consumer.error", error=f"{type(exc).__name__}: {exc}"[:300])
                recovering = True
                await asyncio.sleep(0.5)

    async def claim_abandoned(self, min_idle_ms: int = 60_000, count: int = 100) -> int:
        """Take over entries another consumer read and never acknowledged (it died)."""
        claimed: Any = await self.redis.xautoclaim(
            self.stream, self.group, self.name, min_idle_ms, "0-0", count=count
        )
        entries: list[tuple[str, dict[str, str]]] = [e for e in claimed[1] if e[1]]
        for entry_id, fields in entries:
            await self.handle(entry_id, fields)
        if entries:
            await self.after_batch()
        return len(entries)

    async def poll(self, pending: bool, block_ms: int | None, count: int = 100) -> int:
        """Read and handle one batch: this consumer's pending entries, or new ones."""
        read = await self.redis.xreadgroup(
            self.group,
            self.name,
            {self.stream: "0" if pending else ">"},
            count=count,
            block=block_ms,
        )
        streams: list[tuple[str, list[tuple[str, dict[str, str]]]]] = read or []  # type: ignore[assignment]
        entries = [entry for _, batch in streams for entry in batch]
        for entry_id, fields in entries:
            await self.handle(entry_id, fields)
        if entries:
            await self.after_batch()
        return len(entries)

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            event_id, type_, data = inbox.parse_entry(fields)
        except ValueError as exc:
            log("consumer.malformed", entry_id=entry_id, error=str(exc))
            await self.redis.xack(self.stream, self.group, entry_id)
            return
        outcome = await self._apply(event_id, type_, data)
        await self.redis.xack(self.stream, self.group, entry_id)
        self.handled += 1
        log("consumer.event", event_id=event_id, type=type_, outcome=outcome)

    async def _apply(self, event_id: str, type_: str, data: dict[str, Any]) -> str:
        return await consume(self.sessions, self.clock.now(), event_id, type_, data)


async def consume(
    sessions: Sessions, now: float, event_id: str, type_: str, data: dict[str, Any]
) -> str:
    """Apply one gateway event exactly once: inbox row and effects in one transaction."""
    try:
        async with sessions.begin() as session:
            if await inbox.seen(session, event_id):
                return "duplicate"
            outcome = await inbox.apply_gateway_event(session, type_, data, now)
            inbox.remember(session, event_id, "gateway", type_, outcome, now)
    except IntegrityError:
        return "duplicate"  # another consumer committed the same event first
    return outcome
