"""Cluster mode: the events of each shard's outbox, copied in order to the events stream.

On a Redis Cluster a script runs inside one hash slot, so the scripts cannot XADD to
the events stream (``CAAS_EVENTS_STREAM``, in its own slot); they XADD to their shard's
outbox with the same fields (``keys.Keys.outbox``). This copies each outbox to the
stream, keeping every field, ``event_id`` included, so the backend reads one stream as
on a single Redis (docs/spec.md §4 unchanged).

- Order: one worker at a time forwards a shard (the holder of the shard's lease,
  ``{b}:forwarder``, like the gauge exporter's), from its cursor (``{b}:forwarded``, the
  last id copied, in the shard's slot): a shard's events, so every activation's
  (accepted before succeeded), reach the stream in the order they were written.
- At least once: a round reads the entries after the cursor, appends them to the
  stream, then moves the cursor and trims the outbox below it (``lua.FORWARDED``). A
  crash between the append and the move appends them again on the next round: the
  same fields, the same ``event_id``, which the backend's inbox drops (docs/gateway.md).
- Durable only: before copying, a replica of the shard's master must have the entries
  (``Store.replicated``), and the cursor moves only once a replica of the stream's
  master has the copies (``Store.publish``). So an event reaches the stream only for
  a transition that survives a failover, and a failover loses no copied event.
- Latency: the worker whose script wrote events pokes this (``poke``); if it holds that
  shard's lease it forwards at once; otherwise the holder's poll (``POLL_S``) finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.keys import Keys
from gateway.retry import TRANSIENT
from gateway.store import Store
from protocol.tasks import cancel_requested

log = logging.getLogger(__name__)
POLL_S = 0.05  # how often the holder looks at its shards' outboxes without a poke
LEASE_S = 5.0  # a dead holder's shards wait at most this long for another worker
BATCH = 500  # outbox entries copied per shard and round


class EventsForwarder:
    def __init__(self, store: Store, worker_id: str) -> None:
        self.store = store
        self.worker_id = worker_id
        self.shards = store.keys.all_shards()
        self.cursors: dict[int, str] = {}  # the shards whose lease this worker holds
        self.forwarded = 0  # entries this worker copied (a test and log figure)
        self._poked: set[int] = set()
        self._wakeup = asyncio.Event()
        self._renewed_at = -LEASE_S

    def poke(self, shard: int) -> None:
        """A script just wrote to the shard's outbox: forward it now if it is ours."""
        if shard in self.cursors:
            self._poked.add(shard)
            self._wakeup.set()

    async def run(self) -> None:
        """Hold leases and forward until cancelled; a Redis error only skips a round."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() - self._renewed_at >= LEASE_S / 3:
                    await self._hold()
                    self._renewed_at = loop.time()
                poked, self._poked = self._poked, set()
                await self.forward(sorted(poked) if poked else sorted(self.cursors))
            except TRANSIENT as exc:  # Redis away or failing over: the next round
                log.debug("events.forward_unavailable error=%s", type(exc).__name__)
                self._renewed_at = -LEASE_S  # the cursors may have moved: read again
            except Exception as exc:  # forwarding never takes a worker down
                log.warning("events.forward_failed error=%r", exc)
            if cancel_requested():  # redis-py may turn our cancel into an error
                raise asyncio.CancelledError
            if not self._poked:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        await self._wakeup.wait()

    async def _hold(self) -> None:
        """Renew the leases held, take the free ones; a lease taken starts from the
        cursor in Redis (another worker may have forwarded since)."""
        held = await asyncio.gather(
            *(self.store.hold_lease(k.forwarder, self.worker_id, LEASE_S) for k in self.shards)
        )
        for k, holding in zip(self.shards, held, strict=True):
            if not holding:
                self.cursors.pop(k.shard, None)
            elif k.shard not in self.cursors:
                self.cursors[k.shard] = await self.store.outbox_cursor(k)

    async def forward(self, shards: list[int]) -> int:
        """One round over ``shards`` (those held): copy what their outboxes have."""
        mine = [self.shards[s] for s in shards if s in self.cursors]
        if not mine:
            return 0
        cursors = [self.cursors[k.shard] for k in mine]
        found = await self.store.outbox_entries(mine, cursors, BATCH)
        copied = 0
        for k, cursor, entries in zip(mine, cursors, found, strict=True):
            if entries:
                copied += await self._copy(k, cursor, entries)
        self.forwarded += copied
        return copied

    async def _copy(self, k: Keys, cursor: str, entries: list[tuple[str, dict[str, str]]]) -> int:
        await self.store.replicated(k)  # the transitions behind them survive a failover
        await self.store.publish(entries)
        last = entries[-1][0]
        if await self.store.forwarded(k, cursor, last):
            self.cursors[k.shard] = last
            return len(entries)
        # another worker moved the cursor (our lease lapsed): read it again
        self.cursors[k.shard] = await self.store.outbox_cursor(k)
        return 0

    async def release(self) -> None:
        """A clean stop: let other workers take the shards at once."""
        for shard in list(self.cursors):
            with contextlib.suppress(Exception):
                await self.store.release_lease(self.shards[shard].forwarder, self.worker_id)
        self.cursors.clear()
