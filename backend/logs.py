"""Structured logs: dotted event names and key=value pairs; never a full secret."""

from __future__ import annotations

import json
import logging

_logger = logging.getLogger("backend")


def log(event: str, level: int = logging.INFO, **fields: object) -> None:
    """``log("purchase.created", purchase_id=…)`` → ``purchase.created purchase_id=…``."""
    if not _logger.isEnabledFor(level):
        return
    parts = [event] + [f"{k}={_fmt(v)}" for k, v in fields.items()]
    _logger.log(level, " ".join(parts))


def _fmt(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or not text) else text


def redact(token: str) -> str:
    """The first 8 characters of a token, enough to tell tokens apart in logs."""
    return token[:8] + "…"
