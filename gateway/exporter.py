"""Which worker exports the gauges read from Redis.

``caas_gateway_activation_states``, ``_in_flight``, ``_scheduled_timers`` and
``_leased_timers`` count what is in Redis, the same for every worker. If every worker
exported them, ``sum()`` over the ``gateway`` job would count them once per worker. So
exactly one worker at a time exports them: the holder of a short Redis lease
(``{p}:exporter`` = its worker id, ``SET NX PX``; ``lua.LEASE_HOLD``).

The holder renews the lease every third of its length, and at every scrape; a worker
checks it at scrape time, so one that lost it (frozen past the lease, cut off from
Redis) stops exporting at its next scrape. A dead holder's lease expires after
``CAAS_GATEWAY_GAUGE_LEASE_S`` and the first worker to renew or be scraped after that
takes over: the gauges are absent from every worker for at most that long
(docs/gateway.md, "Metrics"). A clean stop releases the lease at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.retry import TRANSIENT
from gateway.store import Store
from protocol.tasks import cancel_requested

log = logging.getLogger(__name__)


class GaugeExporter:
    def __init__(self, store: Store, worker_id: str, lease_s: float) -> None:
        self.store = store
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.holding = False  # as of the last renewal (logged on change)

    async def hold(self) -> bool:
        """True when this worker holds the lease (taken or renewed now); False when
        another does, or Redis cannot say."""
        try:
            held = await self.store.hold_exporter(self.worker_id, self.lease_s)
        except TRANSIENT as exc:  # Redis away: nobody can say who holds it
            log.debug("exporter.unavailable error=%s", type(exc).__name__)
            held = False
        except Exception as exc:  # metrics never take a worker down
            log.warning("exporter.failed error=%r", exc)
            held = False
        if held != self.holding:
            log.info("exporter.%s worker=%s", "took_over" if held else "let_go", self.worker_id)
            self.holding = held
        return held

    async def run(self) -> None:
        """Renew (or try to take) the lease every third of its length, until cancelled."""
        while True:
            await self.hold()
            if cancel_requested():  # redis-py may turn our cancel into an error
                raise asyncio.CancelledError
            await asyncio.sleep(self.lease_s / 3)

    async def release(self) -> None:
        """Let another worker take over at once (a clean stop)."""
        if self.holding:
            with contextlib.suppress(Exception):
                await self.store.release_exporter(self.worker_id)
            self.holding = False
