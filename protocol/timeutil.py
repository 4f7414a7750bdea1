"""Timestamps (RFC 3339 UTC with milliseconds) and the injectable clock.

Everything that needs "now" takes a ``Clock`` so state machines are tested without
sleeping. Times travel inside the code as float epoch seconds and only become
strings at the wire edge.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time as epoch seconds."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to (unit tests)."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


_last_second: list[tuple[int, str]] = [(-1, "")]  # (epoch second, its formatted prefix)


def format_ts(epoch_s: float) -> str:
    """``2026-11-21T10:00:00.000Z`` for an epoch time (milliseconds, truncated).

    On every message of the hot path, so the seconds part is cached: messages come in
    bursts within the same second."""
    millis = int(epoch_s * 1000)
    second = millis // 1000
    cached_second, prefix = _last_second[0]
    if second != cached_second:
        prefix = f"{datetime.fromtimestamp(second, tz=UTC):%Y-%m-%dT%H:%M:%S}"
        _last_second[0] = (second, prefix)
    return f"{prefix}.{millis % 1000:03d}Z"


def parse_ts(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp; raises ValueError when it is not one."""
    if not isinstance(text, str) or "T" not in text or len(text) > 40:
        raise ValueError("not an RFC 3339 timestamp")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("timestamp without a UTC offset")
        # an offset can push a valid local time past year 9999 in UTC
        return parsed.timestamp()
    except (OverflowError, OSError) as exc:
        raise ValueError("timestamp out of range") from exc
