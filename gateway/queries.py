"""Live status and diagnostics queries (docs/spec.md §3 ``/status-query``, ``/diagnostics``).

The API worker that asks publishes the command; the answer comes back through the
shared subscription to any worker. The command index in Redis says which worker asked
(``reply_to``); the worker that gets the answer hands it over:

- to itself: the waiting future is resolved in memory;
- to another worker: RPUSH onto that worker's inbox list, which each worker drains
  with one BLPOP loop on a connection of its own.

So a waiting query holds no Redis connection (before, each held a pooled connection
in a 30 s BLPOP: 160 silent queries emptied the pool and stalled every other route),
and its timeout is an ``asyncio`` timeout, exactly ``status_query_timeout_s`` (504),
not a socket timeout of the Redis client. ``MAX_WAITING`` bounds the queries one
worker keeps open; past it the API answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from gateway.dispatcher import Dispatcher
from gateway.errors import BrokerUnavailable, TooManyQueries
from gateway.keys import Keys
from gateway.metrics import GatewayMetrics
from gateway.retry import TRANSIENT
from gateway.store import Store
from protocol.models import CommandType
from protocol.redis_connect import AnyRedis
from protocol.tasks import cancel_requested
from protocol.timeutil import Clock

log = logging.getLogger(__name__)
MAX_WAITING = 1024
INBOX_BLOCK_S = 1.0  # one BLPOP round; the client's socket timeout is well above it


class LiveQueries:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        clock: Clock,
        metrics: GatewayMetrics,
        worker_id: str,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.metrics = metrics
        self.worker_id = worker_id
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def ask(
        self, vin: str, ctype: CommandType, timeout_s: float
    ) -> tuple[str, dict[str, Any] | None]:
        """Send a live query; (command_id, the vehicle's answer or None after timeout_s)."""
        if not self.dispatcher.connected:
            raise BrokerUnavailable()
        if len(self._waiting) >= MAX_WAITING:
            raise TooManyQueries(MAX_WAITING)
        command = self.dispatcher.build_query(vin, ctype, timeout_s)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[command.command_id] = answer
        try:
            await self.store.register_query(
                vin, command.command_id, ctype.value, command.issued_at, self.worker_id
            )
            self.dispatcher.publish(command)
            self.metrics.commands.labels(ctype.value).inc()
            async with asyncio.timeout(timeout_s):
                return command.command_id, await answer
        except TimeoutError:
            return command.command_id, None
        finally:
            self._waiting.pop(command.command_id, None)

    async def deliver(self, command_id: str, reply_to: str, body: dict[str, Any]) -> None:
        """An answer to a live query reached this worker: resolve it here, or pass it on."""
        if reply_to == self.worker_id or not reply_to:
            self._resolve(command_id, body)
        else:
            await self.store.push_answer(reply_to, command_id, body)

    def _resolve(self, command_id: str, body: dict[str, Any]) -> None:
        waiting = self._waiting.get(command_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(body)

    async def run(self, client: AnyRedis, keys: Keys) -> None:
        """Drain this worker's inbox until cancelled (``client``: a connection of its own,
        socket timeout above INBOX_BLOCK_S).

        A cancel does not always reach us as a CancelledError: redis-py can turn it into
        a connection error, and on Python 3.11 it can vanish altogether (its socket write
        runs in ``asyncio.wait_for``, which drops a cancel that lands just as the write
        completes; the BLPOP then returns normally). So every round, however it ended,
        checks whether this task was cancelled: shutdown waits one round at most."""
        inbox = keys.inbox(self.worker_id)
        while True:
            try:
                popped = await client.blpop([inbox], timeout=INBOX_BLOCK_S)
            except TRANSIENT as exc:
                if cancel_requested():  # redis-py turned our cancel into a connection error
                    raise asyncio.CancelledError from exc
                log.warning("queries.inbox_unavailable error=%s", type(exc).__name__)
                await asyncio.sleep(INBOX_BLOCK_S)
                continue
            if popped:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    handed = json.loads(popped[1])
                    self._resolve(str(handed["command_id"]), handed["body"])
            if cancel_requested():  # the cancel was swallowed and BLPOP returned normally
                raise asyncio.CancelledError
