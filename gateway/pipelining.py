"""Auto-pipelining of the store's scripts.

Every activation step is a Lua script call, and redis-py spends more client CPU on a
call (building, writing, reading) than Redis spends running the script. Concurrent
activations make their calls in the same event-loop iteration, so this collects the
calls of one iteration and sends them as one pipeline: one connection checkout, one
write, one read. Under the activations benchmark a pipeline carries 2.5-4 calls, and
the gateway's CPU per activation fell by 14 % (docs/performance.md).

Semantics are those of separate calls: each caller gets its own result or exception;
scripts are atomic one by one (a pipeline is not a transaction, nor needs to be: each
script checks what it depends on). A script missing from Redis' cache (after a restart,
or on a replica just promoted by a Redis Cluster failover: scripts are not replicated)
is sent again as EVAL, which runs and caches it on the node of its keys only. (redis-py's
own reload loads it on every node of a cluster, and a node that just died makes that
fail with an error that is not a connection error.)

On a Redis Cluster the client's pipeline is a ClusterPipeline: it sends each EVALSHA to
the master of its keys' slot (every script's keys are in one slot: ``keys.Keys``), one
pipeline per node, and follows MOVED/ASK one call at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from protocol.redis_connect import AnyRedis


class _Call:
    __slots__ = ("args", "future", "keys", "script")

    def __init__(self, script: AsyncScript, keys: list[Any], args: list[Any], future: Any) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.future: asyncio.Future[Any] = future


class AutoPipeline:
    def __init__(self, client: AnyRedis) -> None:
        self.client = client
        self._pending: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()
        self.batches = 0  # pipelines sent (calls / batches = the mean batch)
        self.calls = 0

    async def run(self, script: AsyncScript, *, keys: list[Any], args: list[Any]) -> Any:
        """The script's result, as ``await script(keys=keys, args=args)`` would give."""
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)
        call = _Call(script, keys, args, loop.create_future())
        self._pending.append(call)
        return await call.future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._spawn(self._send(batch))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, held until done (``aclose`` waits for it)."""
        task = asyncio.get_running_loop().create_task(work)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        self.batches += 1
        self.calls += len(batch)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for call in batch:
                    pipe.execute_command(
                        "EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args
                    )
                results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:  # shutting down
            for call in batch:
                call.future.cancel()
            raise
        except Exception as exc:  # the connection failed: every caller sees it
            for call in batch:
                _settle(call.future, exc)
            return
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):
                self._reload(call)
            else:
                _settle(call.future, result)

    def _reload(self, call: _Call) -> None:
        async def as_eval() -> None:
            script = call.script.script
            try:
                result = await self.client.execute_command(
                    "EVAL", script, len(call.keys), *call.keys, *call.args
                )
            except Exception as exc:
                _settle(call.future, exc)
            else:
                _settle(call.future, result)

        self._spawn(as_eval())

    async def aclose(self) -> None:
        """Wait for the pipelines in flight (their callers may have gone)."""
        await asyncio.gather(*self._sending, return_exceptions=True)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
