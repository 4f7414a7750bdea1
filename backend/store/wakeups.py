"""Wake a background loop right after a commit that gave it work.

A unit of work that writes rows some loop must act on (a money intent, an outbox row,
a notification) notes the loop's name; ``Units.begin`` wakes it once the commit has
returned, and a rollback wakes nobody (the work never existed). The loops still poll:
work committed by another process, or before a restart, is found that way.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

MONEY = "money"
RELAY = "relay"
NOTIFY = "notify"


class Wakeups:
    """One ``asyncio.Event`` per loop name."""

    def __init__(self) -> None:
        self._events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def event(self, job: str) -> asyncio.Event:
        return self._events[job]

    def wake(self, job: str) -> None:
        self._events[job].set()
