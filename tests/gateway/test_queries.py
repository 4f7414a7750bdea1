"""Live queries' inbox loop (gateway/queries.py) with a fake Redis client: answers handed
over by another worker resolve the waiting query, and a cancel always ends the loop, even
one the Redis client turns into an error or swallows."""

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


class CancelSwallowedOnce:
    """BLPOP as redis-py ends it on Python 3.11 when the cancel lands just as the command
    has been written: ``asyncio.wait_for`` around the write drops the CancelledError, and
    the command returns its reply as if nothing happened. Only the first cancel is lost
    (a later one, e.g. from the test's own timeout, gets through)."""

    def __init__(self, reply: tuple[str, str] | None) -> None:
        self.reply = reply
        self.calls = 0
        self.swallowed = False

    async def blpop(self, keys: list[str], timeout: float) -> tuple[str, str] | None:  # noqa: ASYNC109 - redis-py's signature
        self.calls += 1
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed = True
            return self.reply
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


@pytest.mark.parametrize(
    "reply",
    [None, ("inbox", json.dumps({"command_id": "c-1", "body": {"status": "ack"}}))],
    ids=["empty", "answer"],
)
async def test_a_cancel_swallowed_by_the_client_still_ends_the_loop(
    reply: tuple[str, str] | None,
) -> None:
    """The cancel never surfaces (BLPOP returns normally, empty or with an answer): the
    loop still ends after that round instead of blocking the worker's shutdown."""
    client = CancelSwallowedOnce(reply)
    task = asyncio.create_task(queries().run(client, Keys()))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert client.calls == 1
