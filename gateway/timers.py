"""The due-timer worker: every retry, timeout and wake-up of an activation is a
member of the ``timers`` sorted set (score = due time), never an in-memory sleep.

A worker claims due members atomically into ``leases`` (score = lease expiry), runs
the machine's ``Tick`` for each, then releases: the commit of a transition already
moved the timer; a no-op puts it back at the activation's ``due_ms``. A worker that
dies (SIGKILL) leaves its leases behind; the next claim by any worker moves expired
leases back into ``timers`` first, so the work is picked up again and, thanks to the
optimistic commits, done once.

Between claims the worker sleeps until the earliest due time, at most
``timer_poll_s``, and is woken at once when this process schedules something due now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.engine import Engine
from gateway.errors import ActivationNotFound, GatewayError
from gateway.events import Tick
from gateway.retry import TRANSIENT, with_redis
from gateway.store import Store
from protocol.timeutil import Clock

log = logging.getLogger(__name__)
RETRY_AFTER_ERROR_S = 1.0


class TimerWorker:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        clock: Clock,
        *,
        lease_s: float,
        poll_s: float,
        batch: int,
        concurrency: int,
    ) -> None:
        self.store = store
        self.engine = engine
        self.clock = clock
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.batch = batch
        self._slots = asyncio.Semaphore(concurrency)
        self._wakeup = asyncio.Event()
        self.processed = 0
        self.stopped = False

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        """End ``run`` at its next turn (a cancel alone can be swallowed by a client
        library that turns it into a connection error)."""
        self.stopped = True
        self._wakeup.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            while not self.stopped:
                try:
                    ids, lease_ms, more = await self.store.claim(
                        self.clock.now(), self.lease_s, self.batch
                    )
                except TRANSIENT as exc:
                    log.warning("timers.claim_failed error=%s", type(exc).__name__)
                    await asyncio.sleep(0.2)
                    continue
                except Exception as exc:  # the loop outlives any one claim
                    # redis-py's cluster client can raise AttributeError from a
                    # connection that a failover closed under it (redis-py 8.1)
                    log.warning("timers.claim_failed error=%r", exc)
                    await asyncio.sleep(0.2)
                    continue
                for activation_id in ids:
                    await self._slots.acquire()
                    tg.create_task(self._run_one(activation_id, lease_ms), name="timer-tick")
                if not more:
                    await self._idle()

    async def _idle(self) -> None:
        timeout = self.poll_s
        with contextlib.suppress(*TRANSIENT):
            due = await self.store.next_due()
            if due is not None:
                timeout = min(self.poll_s, max(0.0, due - self.clock.now()))
        if timeout <= 0:
            return
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()

    async def _run_one(self, activation_id: str, lease_ms: int) -> None:
        retry_at: float | None = None
        try:
            await with_redis(lambda: self.engine.handle(activation_id, Tick()), "tick", 10.0)
        except ActivationNotFound:
            pass
        except (GatewayError, *TRANSIENT) as exc:
            log.warning("timers.tick_failed activation_id=%s error=%s", activation_id, exc)
            retry_at = self.clock.now() + RETRY_AFTER_ERROR_S
        except Exception:
            log.exception("timers.tick_crashed activation_id=%s", activation_id)
            retry_at = self.clock.now() + RETRY_AFTER_ERROR_S
        finally:
            self._slots.release()
        self.processed += 1
        try:
            await with_redis(
                lambda: self.store.release(activation_id, lease_ms, retry_at), "release", 10.0
            )
        except TRANSIENT:
            log.warning("timers.release_failed activation_id=%s (lease will expire)", activation_id)
