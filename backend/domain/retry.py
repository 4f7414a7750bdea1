"""Backoff as a pure function (outbox relay, money intents)."""

from __future__ import annotations


def backoff_s(attempt: int, initial_s: float, max_s: float, multiplier: float = 2.0) -> float:
    """Delay before retry number ``attempt`` (1-based): initial × multiplier^(attempt−1),
    capped at ``max_s``."""
    if attempt < 1:
        return 0.0
    return float(min(max_s, initial_s * multiplier ** min(attempt - 1, 64)))
