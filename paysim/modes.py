"""The provider's failure modes: what it does wrong on purpose. Set at start from the
environment (``CAAS_PAYSIM_*``), changed at run time through ``PATCH /control/config``
(until the next restart), and read by the ledger on every call."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class FailureModes:
    seed: int = 0
    decline_rate: float = 0.0  # authorizations and charges refused (402 card_declined)
    timeout_rate: float = 0.0  # calls answered 504 (after acting half of the time)
    settle_delay_s: float = 1.0  # capture/charge → final settlement webhook
    settle_fail_rate: float = 0.0  # settlements that fail (…settlement_failed)
    duplicate_rate: float = 0.0  # webhooks queued twice (same event_id)
    reorder: bool = False  # the final settlement webhook overtakes the "pending" one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
