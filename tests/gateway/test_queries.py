"""Live queries' inbox loop (gateway/queries.py) with a fake Redis client: answers handed
over by another worker resolve the waiting query, and a cancel always ends the loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.exceptions

from gateway.keys import Keys
from gateway.queries import LiveQueries

pytestmark = pytest.mark.timeout(10)


class CancelAsConnectionError:
    """BLPOP as redis-py sometimes ends it when its task is cancelled mid-read."""

    def __init__(self, items: list[str]) -> None:
        self.items = items

    async def blpop(self, keys: list[str], timeout: float) -> tuple[str, str] | None:  # noqa: ASYNC109 - redis-py's signature
        if self.items:
            return keys[0], self.items.pop(0)
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            raise redis.exceptions.ConnectionError("Connection closed by server.") from None
        return None


def queries() -> LiveQueries:
    return LiveQueries(None, None, None, None, "worker-a")  # type: ignore[arg-type]


async def test_an_answer_in_the_inbox_resolves_the_waiting_query() -> None:
    """The inbox carries (command_id, body); the future waiting on that id gets the body."""
    live = queries()
    waiting: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    live._waiting["c-1"] = waiting
    handed = json.dumps({"command_id": "c-1", "body": {"status": "ack"}})
    client = CancelAsConnectionError([handed, "not json"])
    task = asyncio.create_task(live.run(client, Keys()))  # type: ignore[arg-type]
    assert await asyncio.wait_for(waiting, 2) == {"status": "ack"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_turned_into_a_connection_error_still_ends_the_loop() -> None:
    """Shutdown must not hang: the loop does not mistake its own cancel for an outage."""
    task = asyncio.create_task(queries().run(CancelAsConnectionError([]), Keys()))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
