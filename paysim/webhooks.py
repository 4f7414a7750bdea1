"""Outgoing webhooks: durable rows (``store.webhooks``), signed at each delivery
attempt (``Caas-Signature``, the receiver allows 300 s of clock skew), POSTed until the
receiver answers 2xx. A non-2xx answer or a connection error reschedules the row with
exponential backoff (``initial_backoff_s`` doubling up to ``max_backoff_s``); a row is
never dropped. Delivery is at least once: a kill between the POST and the row being
marked delivered sends it again after the restart (the receiver dedups on event_id).
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from paysim.store import Store, Webhook
from protocol.timeutil import Clock
from protocol.webhook_signing import SIGNATURE_HEADER, sign

log = logging.getLogger("paysim.webhooks")


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Delay after failed attempt number ``attempt`` (1-based): initial × 2^(attempt−1),
    capped at ``max_s``."""
    return float(min(max_s, initial_s * 2.0 ** min(max(attempt - 1, 0), 64)))


class Deliverer:
    """Delivers the due webhooks. ``client`` None: nowhere to deliver (they wait)."""

    def __init__(
        self,
        store: Store,
        secret: str,
        clock: Clock,
        client: httpx.AsyncClient | None,
        url: str,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        concurrency: int = 1,
    ) -> None:
        self.store = store
        self.secret = secret
        self.clock = clock
        self.client = client
        self.url = url
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.concurrency = concurrency

    async def deliver_due(self, limit: int = 200) -> int:
        """One pass over the due webhooks (oldest first, ``concurrency`` POSTs at once);
        returns how many were delivered."""
        client = self.client
        if client is None:
            return 0
        due = self.store.due_webhooks(self.clock.now(), limit)
        if self.concurrency <= 1:
            return sum([await self._deliver(client, hook) for hook in due])
        gate = asyncio.Semaphore(self.concurrency)

        async def gated(hook: Webhook) -> bool:
            async with gate:
                return await self._deliver(client, hook)

        return sum(await asyncio.gather(*(gated(hook) for hook in due)))

    async def _deliver(self, client: httpx.AsyncClient, hook: Webhook) -> bool:
        headers = {
            SIGNATURE_HEADER: sign(self.secret, hook.body, self.clock.now()),
            "Content-Type": "application/json",
        }
        try:
            response = await client.post(self.url, content=hook.body, headers=headers)
            error = "" if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:  # down, refused, timed out: the same, try later
            error = type(exc).__name__
        if not error:
            self.store.delivered(hook.id, self.clock.now())
            return True
        attempts = hook.attempts + 1
        delay = backoff_s(attempts, self.initial_backoff_s, self.max_backoff_s)
        self.store.retry_later(hook.id, attempts, self.clock.now() + delay, error)
        log.info(
            "paysim.webhook_failed id=%s type=%s attempt=%d error=%s retry_in_s=%.1f",
            hook.event_id, hook.type, attempts, error, delay,
        )  # fmt: skip
        return False

    async def run(self, poll_s: float) -> None:
        """Deliver forever: again at once after a pass that delivered, else after
        ``poll_s``. An unexpected error is logged and the loop goes on."""
        while True:
            try:
                delivered = await self.deliver_due()
            except Exception:
                log.exception("paysim.deliver_failed")
                delivered = 0
            if not delivered:
                await asyncio.sleep(poll_s)
