"""Wake a background loop right after a commit that gave it work.

Code that writes a row some loop must act on (a money intent, an outbox row, a
notification) calls ``mark(session, job)`` inside its transaction. Sessions made by
``db.make_sessions`` carry this process's ``Wakeups``; after the commit the marked
loops are woken, and a rollback forgets the marks (the work never existed). The loops
still poll: work committed by another process, or before a restart, is found that way.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

MONEY = "money"
RELAY = "relay"
NOTIFY = "notify"

_HUB = "caas_wakeups"  # Session.info keys
_MARKED = "caas_marked"


class Wakeups:
    """One ``asyncio.Event`` per loop name."""

    def __init__(self) -> None:
        self._events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def event(self, job: str) -> asyncio.Event:
        return self._events[job]

    def wake(self, job: str) -> None:
        self._events[job].set()

    def session_info(self) -> dict[str, Any]:
        """The ``info`` a session needs so that its commits wake this hub's loops."""
        return {_HUB: self}


def mark(session: AsyncSession | Session, job: str) -> None:
    """Wake ``job`` once this session's transaction commits."""
    marked: set[str] = session.info.setdefault(_MARKED, set())
    marked.add(job)


class WakingSession(Session):
    """The sync session behind every ``AsyncSession`` of ``db.make_sessions``."""


@event.listens_for(WakingSession, "after_commit")
def _wake_marked(session: Session) -> None:
    hub: Wakeups | None = session.info.get(_HUB)
    for job in session.info.pop(_MARKED, set()):
        if hub is not None:
            hub.wake(job)


@event.listens_for(WakingSession, "after_rollback")
def _forget_marked(session: Session) -> None:
    session.info.pop(_MARKED, None)
