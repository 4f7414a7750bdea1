"""Asyncio helpers shared by the services."""

from __future__ import annotations

import asyncio


def cancel_requested() -> bool:
    """This task was cancelled, but the CancelledError may not have reached us: redis-py
    can turn a cancel that lands mid-command into a ConnectionError, or (Python 3.11's
    ``asyncio.wait_for`` around its socket write) drop it and return the command's reply.
    Loops check this so a swallowed cancel cannot keep them (and a shutdown waiting on
    them) alive."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
