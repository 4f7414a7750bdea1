"""Counting and logging the vehicle messages the gateway refuses.

A refused message is counted in ``caas_gateway_inbound_rejected_total{leaf, reason}``
(both labels from fixed sets: ``dispatcher.INBOUND_LEAVES`` + ``other``, and
``intake.REASONS``) and logged at most once per ``LOG_EVERY_S`` per (leaf, reason) with
how many were not logged: a car can send thousands a second, and a log line per
message would let it fill the disk. A log line carries only our own words: the topic's
VIN once it is known to be a VIN, and the reason's detail, never the payload.
"""

from __future__ import annotations

import logging
import time

from gateway.metrics import GatewayMetrics
from protocol.errors import PayloadRejected

log = logging.getLogger("gateway.inbound")
LOG_EVERY_S = 10.0


class Rejections:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self._last_logged: dict[tuple[str, str], tuple[float, int]] = {}

    def count(self, leaf: str, vin: str, exc: PayloadRejected) -> None:
        self.metrics.rejected.labels(leaf, exc.reason).inc()
        key = (leaf, exc.reason)
        now = time.monotonic()
        last, unlogged = self._last_logged.get(key, (-LOG_EVERY_S, 0))
        if now - last < LOG_EVERY_S:
            self._last_logged[key] = (last, unlogged + 1)
            return
        self._last_logged[key] = (now, 0)
        log.warning(
            "inbound.rejected leaf=%s reason=%s vin=%s detail=%r not_logged_since_last=%d",
            leaf, exc.reason, vin, exc.detail, unlogged,
        )  # fmt: skip
